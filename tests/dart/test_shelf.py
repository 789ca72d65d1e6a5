"""S1-S17: ``shelf_web_socket``'s ``web_socket_test.dart`` (dart-web-socket-channel.md §4.7),
for ``wschannel.serve``.

design.md decision 1: ``wschannel.server`` holds the ``shelf_web_socket`` handler rules
(status codes, origin checks, protocol choice). The raw requests carry the shelf tests'
headers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

import wschannel
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel
from wschannel.server import Server

from .conftest import (
    ACCEPT,
    drain,
    http_exchange,
    upgrade_headers,
    upgrade_request,
    within,
)


async def test_client_talks_to_a_handler_that_greets_answers_and_closes() -> None:
    """S1: can communicate with a client.

    The handler sends ``hello!``, expects ``ping``, replies ``pong`` and closes; the client
    sees exactly those two messages, then the stream completes.
    """
    server_received: list[Message] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        channel.sink.add("hello!")
        subscription = aiter(channel.stream)
        server_received.append(await anext(subscription))
        channel.sink.add("pong")
        await channel.sink.close()

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await within(IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}"))
        received: list[Message] = []

        async def converse() -> None:
            async for message in channel.stream:
                received.append(message)
                if message == "hello!":
                    channel.sink.add("ping")

        await within(converse())
    assert received == ["hello!", "pong"]
    assert server_received == ["ping"]
    assert channel.close_code == 1005  # design.md decision 4: the handler closed without a code


async def test_server_picks_the_first_protocol_in_the_client_order() -> None:
    """S2: negotiates the sub-protocol: server ``three, two, x``, client ``one, two,
    three`` ⇒ ``two`` on both sides (the client's preference order wins)."""
    server_protocol: list[str | None] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        server_protocol.append(channel.protocol)

    async with wschannel.serve(handler, "127.0.0.1", 0, protocols=["three", "two", "x"]) as server:
        channel = await within(
            IOWebSocketChannel.connect(
                f"ws://127.0.0.1:{server.port}", protocols=["one", "two", "three"]
            )
        )
        assert channel.protocol == "two"
        assert await drain(channel.stream) == []
    assert server_protocol == ["two"]


async def test_server_without_protocols_accepts_a_client_offering_some() -> None:
    """S3: handles a protocol header without allowed protocols: the connection opens and
    the client's protocol is ``None`` (design.md decision 3; Dart says null too)."""
    opened: list[str | None] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        opened.append(channel.protocol)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await within(
            IOWebSocketChannel.connect(
                f"ws://127.0.0.1:{server.port}", protocols=["one", "two", "three"]
            )
        )
        assert channel.protocol is None
        assert await drain(channel.stream) == []
    assert opened == [None]


async def test_server_handler_sees_no_protocol_when_the_server_has_none() -> None:
    """S4: allows callbacks without protocols: the handler's protocol is ``None``.

    Dart's callback takes ``(channel, protocol)``; ``wschannel``'s handler takes the
    channel, whose ``protocol`` is that second argument.
    """
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def handler(channel: IOWebSocketChannel) -> None:  # a plain (one-argument) function
        seen.set_result(channel.protocol)
        channel.sink.close()

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await within(IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}"))
        await within(seen)
        assert await drain(channel.stream) == []


async def test_server_refuses_a_socket_that_is_not_a_stream_socket() -> None:
    """S5: cannot hijack a non-socket channel (3.x).

    Python has no hijacking: the nearest programming error is handing ``serve`` a
    transport it cannot run WebSocket over (a datagram socket), which raises ValueError.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError):
            await within(wschannel.serve(lambda channel: None, sock=udp))


@pytest.fixture
async def origin_server() -> AsyncIterator[Server]:
    """S6-S10's server: allowed origins ``pub.dartlang.org`` and ``GoOgLe.CoM``."""
    async with wschannel.serve(
        lambda channel: None,
        "127.0.0.1",
        0,
        allowed_origins=["pub.dartlang.org", "GoOgLe.CoM"],
    ) as server:
        yield server


@pytest.mark.parametrize(
    ("dart_id", "origin", "expected"),
    [
        ("S6", "pub.dartlang.org", 101),
        ("S7", "dartlang.org", 403),
        ("S8", None, 101),
        ("S9", "pub.DartLang.org", 101),
        ("S10", "google.com", 101),
    ],
    ids=["S6-allowed", "S7-other", "S8-none", "S9-mixed-case-client", "S10-mixed-case-server"],
)
async def test_server_checks_the_origin_case_insensitively(
    origin_server: Server, dart_id: str, origin: str | None, expected: int
) -> None:
    """S6-S10: with allowed origins: an allowed origin ⇒ 101; ``dartlang.org`` ⇒ 403; no
    origin ⇒ 101; the client's origin in mixed case ⇒ 101; the server's list in mixed case
    against ``google.com`` ⇒ 101."""
    extra = {} if origin is None else {"Origin": origin}
    status, headers = await http_exchange(
        origin_server.port, upgrade_request(headers=upgrade_headers(**extra))
    )
    assert status == expected, dart_id
    if expected == 101:
        assert headers["sec-websocket-accept"] == ACCEPT


async def test_server_accepts_a_connection_header_with_several_tokens(echo_server: Server) -> None:
    """S11: allows a Connection header with multiple values (``Other-Token, Upgrade``)."""
    status, headers = await http_exchange(
        echo_server.port,
        upgrade_request(headers=upgrade_headers(Connection="Other-Token, Upgrade")),
    )
    assert status == 101
    assert headers["sec-websocket-accept"] == ACCEPT
    assert headers["upgrade"].lower() == "websocket"


async def test_server_answers_a_valid_upgrade_with_101_and_the_signed_key(
    echo_server: Server,
) -> None:
    """S11 (baseline): the shelf tests' headers ⇒ 101 with ``Sec-WebSocket-Accept`` =
    ``sign_key(key)`` and ``Connection: Upgrade``."""
    status, headers = await http_exchange(echo_server.port, upgrade_request())
    assert status == 101
    assert headers["sec-websocket-accept"] == ACCEPT
    assert "upgrade" in headers["connection"].lower()
    assert "sec-websocket-protocol" not in headers


@pytest.mark.parametrize(
    ("dart_id", "request_bytes", "expected"),
    [
        ("S12", upgrade_request(method="DELETE"), 404),
        ("S13", upgrade_request(headers=upgrade_headers(Connection=None)), 404),
        ("S14", upgrade_request(headers=upgrade_headers(Upgrade="fblthp")), 404),
        ("S15", upgrade_request(headers=upgrade_headers(Sec_WebSocket_Version=None)), 400),
        ("S16", upgrade_request(headers=upgrade_headers(Sec_WebSocket_Version="15")), 426),
        ("S17", upgrade_request(headers=upgrade_headers(Sec_WebSocket_Key=None)), 400),
    ],
    ids=[
        "S12-delete",
        "S13-no-connection",
        "S14-upgrade-fblthp",
        "S15-no-version",
        "S16-version-15",
        "S17-no-key",
    ],
)
async def test_server_answers_a_bad_upgrade_request_with_shelf_status_codes(
    echo_server: Server, dart_id: str, request_bytes: bytes, expected: int
) -> None:
    """S12-S17: HTTP errors: DELETE ⇒ 404; no ``Connection`` ⇒ 404; ``Upgrade: fblthp`` ⇒
    404; no version ⇒ 400; version ``15`` ⇒ 404 in shelf; no key ⇒ 400.

    S16 deviates from shelf on purpose: an unsupported version gets 426 Upgrade Required
    with ``Sec-WebSocket-Version: 13``, as RFC 6455 §4.4 asks and issue 2 specifies (shelf's
    404 carries no version header, so a client cannot tell which version to retry with).
    """
    status, headers = await http_exchange(echo_server.port, request_bytes)
    assert status == expected, dart_id
    assert "sec-websocket-accept" not in headers
    if status == 426:
        assert headers["sec-websocket-version"] == "13"
