"""wschannel.asgi: a channel handler under a real uvicorn on 127.0.0.1, with wschannel's client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from conftest import SHORT, TIMEOUT, next_message, wait

from wschannel import WebSocketChannelException, status
from wschannel._wschannel import HandshakeError
from wschannel.asgi import ASGIApp, ASGIWebSocketChannel, Receive, Scope, Send, app
from wschannel.io import IOWebSocketChannel

uvicorn = pytest.importorskip("uvicorn")

Serve = Callable[[ASGIApp], Awaitable[str]]


@pytest.fixture
async def serve_asgi() -> AsyncIterator[Serve]:
    """Run ASGI apps under uvicorn on 127.0.0.1 (a free port); their base URL, ws://."""
    servers: list[tuple[object, asyncio.Task[None]]] = []

    async def start(application: ASGIApp) -> str:
        config = uvicorn.Config(
            application, host="127.0.0.1", port=0, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        servers.append((server, task))
        async with asyncio.timeout(TIMEOUT):
            while not server.started:
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    yield start
    for server, task in servers:
        server.should_exit = True  # type: ignore[attr-defined]
        await asyncio.wait_for(task, TIMEOUT)


async def echo(channel: ASGIWebSocketChannel) -> None:
    async for message in channel.stream:
        if message == "close":
            await channel.sink.close(4001, "asked to")
            return
        channel.sink.add(message)


async def test_asgi_app_echoes_text_and_binary_under_uvicorn(serve_asgi: Serve) -> None:
    url = await serve_asgi(app(echo))
    async with IOWebSocketChannel.connect(url) as channel:
        subscription = aiter(channel.stream)
        channel.sink.add("text")
        channel.sink.add(b"\x00\xffbinary")
        channel.sink.add("")
        assert await next_message(subscription) == "text"
        assert await next_message(subscription) == b"\x00\xffbinary"
        assert await next_message(subscription) == ""


async def test_asgi_app_sends_the_handler_close_code_and_reason(serve_asgi: Serve) -> None:
    url = await serve_asgi(app(echo))
    channel = await IOWebSocketChannel.connect(url)
    channel.sink.add("close")
    assert [message async for message in channel.stream] == []
    assert (channel.close_code, channel.close_reason) == (4001, "asked to")


async def test_asgi_channel_sees_the_client_close_code_and_reason(serve_asgi: Serve) -> None:
    seen: asyncio.Future[tuple[int | None, str | None]] = asyncio.Future()

    async def handler(channel: ASGIWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        seen.set_result((channel.close_code, channel.close_reason))

    url = await serve_asgi(app(handler))
    channel = await IOWebSocketChannel.connect(url)
    await wait(channel.sink.close(3003, "client leaves"))
    assert await asyncio.wait_for(seen, TIMEOUT) == (3003, "client leaves")
    assert channel.close_code == 3003  # the server's echo


async def test_asgi_app_closes_with_1000_when_the_handler_returns(serve_asgi: Serve) -> None:
    async def handler(channel: ASGIWebSocketChannel) -> None:
        channel.sink.add(f"path {channel.path} ua {channel.header('User-Agent') is not None}")

    url = await serve_asgi(app(handler))
    channel = await IOWebSocketChannel.connect(url + "/some/where?x=1")
    assert [message async for message in channel.stream] == ["path /some/where ua True"]
    assert channel.close_code == status.NORMAL_CLOSURE


async def test_asgi_app_closes_with_1011_when_the_handler_raises(
    serve_asgi: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(channel: ASGIWebSocketChannel) -> None:
        raise RuntimeError("asgi handler bug")

    url = await serve_asgi(app(handler))
    with caplog.at_level(logging.ERROR, logger="wschannel.server"):
        channel = await IOWebSocketChannel.connect(url)
        await wait(channel.sink.done)
    assert channel.close_code == status.INTERNAL_SERVER_ERROR
    assert "asgi handler bug" in caplog.text


async def test_asgi_app_negotiates_the_subprotocol_in_the_client_order(serve_asgi: Serve) -> None:
    async def handler(channel: ASGIWebSocketChannel) -> None:
        channel.sink.add(str(channel.protocol))

    url = await serve_asgi(app(handler, protocols=["three", "two", "x"]))
    channel = IOWebSocketChannel.connect(url, protocols=["one", "two", "three"])
    assert [message async for message in channel.stream] == ["two"]
    assert channel.protocol == "two"
    plain = IOWebSocketChannel.connect(url)
    assert [message async for message in plain.stream] == ["None"]
    assert plain.protocol is None


async def test_asgi_app_keeps_a_plain_function_handler_open(serve_asgi: Serve) -> None:
    def handler(channel: ASGIWebSocketChannel) -> None:
        channel.stream.listen(channel.sink.add)

    url = await serve_asgi(app(handler))
    async with IOWebSocketChannel.connect(url) as channel:
        await asyncio.sleep(SHORT)
        channel.sink.add("still open")
        assert await next_message(aiter(channel.stream)) == "still open"


async def test_asgi_app_refuses_an_origin_not_allowed(serve_asgi: Serve) -> None:
    url = await serve_asgi(app(echo, allowed_origins=["https://good.example"]))
    channel = IOWebSocketChannel.connect(url, headers={"Origin": "https://evil.example"})
    with pytest.raises(WebSocketChannelException) as info:
        await wait(channel.ready)
    assert isinstance(info.value.inner, HandshakeError)
    assert info.value.inner.status == 403
    async with IOWebSocketChannel.connect(url, headers={"Origin": "https://GOOD.example"}) as ok:
        ok.sink.add("welcome")
        assert await next_message(aiter(ok.stream)) == "welcome"


async def http_get(url: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    return int(response.split(b" ", 2)[1]), response


async def test_asgi_app_answers_plain_http_with_404(serve_asgi: Serve) -> None:
    url = await serve_asgi(app(echo))
    status_code, response = await http_get(url)
    assert status_code == 404
    assert response.endswith(b"speaks WebSocket only.\n")


async def test_asgi_app_hands_plain_http_to_the_fallback_app(serve_asgi: Serve) -> None:
    async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"page {scope['path']}".encode()})

    url = await serve_asgi(app(echo, fallback=fallback))
    status_code, response = await http_get(url)
    assert (status_code, b"page /page" in response) == (200, True)
    async with IOWebSocketChannel.connect(url) as channel:
        channel.sink.add("both")
        assert await next_message(aiter(channel.stream)) == "both"
