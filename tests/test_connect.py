"""One ``connect`` for everything: the top-level ``wschannel.connect`` and
``WebSocketChannel.connect`` take every option of the platform's connect (and, under Pyodide,
name the ones the browser cannot honour); ``async with`` / ``with`` close with 1000, or 1011
when the block raised; messages added before the connection opened and dropped unsent are
reported. Over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import subprocess
import sys
import textwrap
import types
from collections.abc import Awaitable, Callable, Iterator

import pytest
from conftest import SHORT, TIMEOUT, RawHandler, RawServer, next_message, wait, wait_until
from sync_helpers import raw_server as sync_raw_server
from sync_helpers import sync_server

import wschannel
import wschannel.sync
from wschannel import WebSocketChannel, WebSocketChannelException
from wschannel._platform import BROWSER_OPTIONS, check_browser_options
from wschannel._reconnect import close_code_for
from wschannel.channel import ConnectOptions
from wschannel.io import IOWebSocketChannel

StartRaw = Callable[[RawHandler], Awaitable[RawServer]]


@pytest.fixture
def unused_port() -> int:
    """A port on 127.0.0.1 nobody listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def raw_server_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts and never answers: it reads until EOF."""

    def read_until_eof(sock: socket.socket) -> None:
        while sock.recv(4096):
            pass

    with sync_raw_server(read_until_eof) as server:
        yield server.listener.getsockname()[1]


# Every option.


def test_connect_options_are_exactly_those_of_the_platforms_connect() -> None:
    parameters = inspect.signature(IOWebSocketChannel.connect).parameters
    keywords = {name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert set(ConnectOptions.__annotations__) == keywords


async def test_top_level_connect_takes_the_platforms_options(echo_url: str) -> None:
    # What the guide shows for IOWebSocketChannel.connect, through the top-level names.
    for connect in (wschannel.connect, WebSocketChannel.connect):
        channel = connect(
            echo_url,
            connect_timeout=TIMEOUT,
            compression=False,
            headers={"X-Test": "1"},
            ping_interval=None,
            max_queue=4,
            proxy=None,
        )
        assert isinstance(channel, IOWebSocketChannel)
        await wait(channel.ready)
        channel.sink.add("hello")
        assert await next_message(aiter(channel.stream)) == "hello"
        await wait(channel.sink.close(1000))


async def test_top_level_connect_applies_connect_timeout(raw_server: StartRaw) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers the upgrade

    server = await raw_server(silent)
    channel = wschannel.connect(server.url, connect_timeout=SHORT)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(channel.ready, TIMEOUT)


# Under Pyodide.


@pytest.fixture
def pyodide() -> Iterator[None]:
    """Make ``wschannel.connect`` believe it runs under Pyodide (its check looks for the
    ``pyodide`` module); the browser's channel itself still cannot open here."""
    sys.modules["pyodide"] = types.ModuleType("pyodide")
    try:
        yield
    finally:
        del sys.modules["pyodide"]


def test_browser_check_names_each_option_it_cannot_honour() -> None:
    check_browser_options({"protocols": ["chat"], "close_timeout": 1.0})  # honoured
    with pytest.raises(TypeError) as caught:
        check_browser_options({"connect_timeout": 5.0, "headers": {"a": "b"}, "protocols": []})
    message = str(caught.value)
    assert "connect_timeout=5.0" in message
    assert "headers={'a': 'b'}" in message
    assert "protocols=" not in message
    assert ", ".join(BROWSER_OPTIONS) in message


@pytest.mark.usefixtures("pyodide")
async def test_connect_under_pyodide_refuses_an_option_the_browser_cannot_honour() -> None:
    with pytest.raises(TypeError, match=r"cannot honour ping_interval=20"):
        wschannel.connect("ws://127.0.0.1:9", ping_interval=20)
    # The options it honours go through to the browser's channel (which needs Pyodide).
    with pytest.raises(RuntimeError, match="needs Pyodide"):
        wschannel.connect("ws://127.0.0.1:9", protocols=["chat"], close_timeout=1.0)


# async with / with: the close code.


async def close_code_seen_by_server(body_raises: bool) -> int | None:
    seen: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        seen.set_result(channel.close_code)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}"
        with pytest.raises(ZeroDivisionError) if body_raises else contextlib.nullcontext():
            async with wschannel.connect(url) as channel:
                channel.sink.add("hello")
                if body_raises:
                    _ = 1 / 0
        assert channel.sink.done.done()  # closed when the block is left
        return await asyncio.wait_for(seen, TIMEOUT)


async def test_async_with_closes_with_1000_when_the_block_ends() -> None:
    assert await close_code_seen_by_server(body_raises=False) == 1000


async def test_async_with_closes_with_1011_when_the_block_raised() -> None:
    assert await close_code_seen_by_server(body_raises=True) == 1011


async def test_async_with_keeps_the_code_of_a_close_made_in_the_block(echo_url: str) -> None:
    async with wschannel.connect(echo_url) as channel:
        await channel.sink.close(3000)
    assert channel.close_code == 3000  # the echo server's answer to ours


@pytest.mark.parametrize("body_raises", [False, True])
def test_blocking_with_closes_with_1000_or_1011(body_raises: bool) -> None:
    seen: list[int | None] = []

    def handler(channel: wschannel.sync.SyncWebSocketChannel) -> None:
        for _ in channel.stream:
            pass
        seen.append(channel.close_code)

    with sync_server(handler) as server:
        url = f"ws://127.0.0.1:{server.port}"
        raising = pytest.raises(ZeroDivisionError) if body_raises else contextlib.nullcontext()
        with raising, wschannel.sync.connect(url) as channel:
            channel.sink.add("hello")
            if body_raises:
                _ = 1 / 0
        assert channel.sink.done.done()
    assert seen == [1011 if body_raises else 1000]


# Messages added before the connection opened, dropped unsent.


async def test_messages_added_before_a_failed_open_are_reported(
    caplog: pytest.LogCaptureFixture, unused_port: int
) -> None:
    channel = wschannel.connect(f"ws://127.0.0.1:{unused_port}", reconnect_delays=lambda: [])
    for message in ("one", b"two", "three"):
        channel.sink.add(message)
    with caplog.at_level(logging.WARNING, "wschannel.client"):
        with pytest.raises(WebSocketChannelException):
            await asyncio.wait_for(channel.ready, TIMEOUT)
        await wait_until(lambda: caplog.records, what="the drop was reported")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("3 messages added before the connection opened were dropped unsent: ")
    assert f"127.0.0.1:{unused_port}" in message  # the failure, which names the URL


async def test_nothing_is_reported_when_what_was_added_before_open_was_sent(
    caplog: pytest.LogCaptureFixture, echo_url: str
) -> None:
    with caplog.at_level(logging.WARNING, "wschannel.client"):
        channel = wschannel.connect(echo_url)
        channel.sink.add("early")
        assert await next_message(aiter(channel.stream)) == "early"
        await wait(channel.sink.close(1000))
    assert not caplog.records


def test_messages_dropped_when_the_program_ends_before_open_are_reported(
    raw_server_port: int,
) -> None:
    # A server that accepts TCP but never answers the upgrade: the program ends first.
    program = textwrap.dedent(
        f"""
        import asyncio, wschannel

        async def main():
            channel = wschannel.connect("ws://127.0.0.1:{raw_server_port}")
            channel.sink.add("never sent")
            await asyncio.sleep(0)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "1 message added before the connection opened was dropped unsent" in result.stderr


async def test_async_with_closes_with_1001_when_the_task_is_cancelled() -> None:
    seen: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
    inside = asyncio.Event()

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        seen.set_result(channel.close_code)

    async def client(url: str) -> None:
        async with wschannel.connect(url):
            inside.set()
            await asyncio.Event().wait()  # until cancelled

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        task = asyncio.ensure_future(client(f"ws://127.0.0.1:{server.port}"))
        await wait(inside.wait())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wait(task)
        assert await asyncio.wait_for(seen, TIMEOUT) == 1001


def test_the_close_code_of_a_block_says_how_it_ended() -> None:
    assert close_code_for(None) == 1000
    assert close_code_for(ValueError()) == 1011
    assert close_code_for(asyncio.CancelledError()) == 1001
    assert close_code_for(KeyboardInterrupt()) == 1001
