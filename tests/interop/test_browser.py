"""wschannel's server with a real browser: headless Chromium (Debian's ``chromium`` package).

wschannel's server also serves the page (``browser/page.html``) through ``process_request``.
The page's WebSocket goes through :class:`RecordingProxy`, a TCP relay that keeps the server's
101 response and counts the bytes each way, so the test sees from the server side that the
``Sec-WebSocket-Extensions`` answer accepted permessage-deflate and that messages were
compressed. The server sends the script's messages; the page echoes them and reports what it
received (type, length, SHA-256), and the server checks the echoes byte for byte.

Each test runs over plain TCP and over TLS (``https://`` page, ``wss://`` socket: Chromium's
TLS against wschannel's server with ``certfile=``, TLS in the engine). Chromium trusts the
test's certificate by its public key (``--ignore-certificate-errors-spki-list``); over TLS
the relay sees only ciphertext, so the server's answer is checked from the page's side.

``tests/interop/setup.sh`` installs Chromium.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import wschannel
from wschannel._wschannel import Request
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel
from wschannel.server import Response

from .browser.devtools import Chromium, DevTools, find_chromium
from .conftest import (
    CLIENT_CLOSE_CODE,
    CLIENT_CLOSE_REASON,
    CLOSE_COMMAND,
    COMPRESSION,
    HOST,
    LARGE,
    MESSAGES,
    SERVER_CLOSE_CODE,
    SERVER_CLOSE_REASON,
    TIMEOUT,
    ConnectionRecord,
    Tls,
    check_messages,
    has_deflate,
    within,
)

PAGE = (Path(__file__).parent / "browser" / "page.html").read_bytes()
CHROMIUM = find_chromium()

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is missing: run tests/interop/setup.sh"
)


@pytest.fixture(params=["ws", "wss"])
def scheme(request: pytest.FixtureRequest) -> str:
    """Every test here over plain TCP and over TLS."""
    return str(request.param)


def spki_hash(certfile: Path) -> str:
    """The base64 SHA-256 of the server certificate's public key (Chromium's pin format)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certificate = x509.load_pem_x509_certificate(certfile.read_bytes())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def chromium(tls: Tls) -> Iterator[Chromium]:
    """One headless Chromium for the module, killed at the end; it trusts the test's
    certificate (``tls``) by its public key."""
    assert CHROMIUM is not None
    flags = (f"--ignore-certificate-errors-spki-list={spki_hash(tls.certfile)}",)
    browser = Chromium(CHROMIUM, TIMEOUT, flags)
    try:
        yield browser
    finally:
        browser.stop()


@pytest.fixture
async def devtools(chromium: Chromium) -> AsyncIterator[DevTools]:
    async with DevTools.open(chromium.endpoint, TIMEOUT) as devtools:
        yield devtools


@dataclass
class Relayed:
    """What crossed one connection of the proxy."""

    response_head: bytes = b""
    """The server's HTTP response, up to the blank line."""
    to_client: int = 0
    """Bytes from the server to the client, the response included."""
    to_server: int = 0


class RecordingProxy:
    """A TCP relay on 127.0.0.1 to ``upstream_port`` that records each connection."""

    def __init__(self, upstream_port: int, *, plaintext: bool = True) -> None:
        self.upstream_port = upstream_port
        self.plaintext = plaintext
        """Whether the bytes are HTTP and WebSocket (not TLS): then the 101 is kept."""
        self.connections: list[Relayed] = []
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, HOST, 0)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await within(self.server.wait_closed())

    async def _relay(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        relayed = Relayed()
        self.connections.append(relayed)
        server_reader, server = await asyncio.open_connection(HOST, self.upstream_port)
        try:
            await asyncio.gather(
                self._pump(client_reader, server, relayed, to_server=True),
                self._pump(server_reader, client, relayed, to_server=False),
            )
        finally:
            client.close()
            server.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        relayed: Relayed,
        *,
        to_server: bool,
    ) -> None:
        head = bytearray()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if to_server:
                    relayed.to_server += len(data)
                else:
                    relayed.to_client += len(data)
                    if self.plaintext and not relayed.response_head:
                        head += data
                        end = head.find(b"\r\n\r\n")
                        if end >= 0:
                            relayed.response_head = bytes(head[: end + 4])
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()


def response_headers(head: bytes) -> dict[str, str]:
    """The headers of an HTTP response head, with lower-case names."""
    status, *lines = head.decode("latin-1").split("\r\n")
    assert status.startswith("HTTP/1.1 101 "), status
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


def summary(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """What the page reports for ``messages``."""
    reports = []
    for message in messages:
        data = message.encode() if isinstance(message, str) else message
        sha256 = hashlib.sha256(data).hexdigest()
        reports.append(
            {"binary": isinstance(message, bytes), "length": len(data), "sha256": sha256}
        )
    return reports


class BrowserTest:
    """wschannel's server driving the page: it sends the messages and checks the echoes."""

    def __init__(self, close_first: bool) -> None:
        self.close_first = close_first
        self.records: asyncio.Queue[ConnectionRecord] = asyncio.Queue()

    async def handler(self, channel: IOWebSocketChannel) -> None:
        request = channel.request
        assert request is not None
        record = ConnectionRecord(offered_extensions=request.header("sec-websocket-extensions"))
        try:
            for message in MESSAGES:
                channel.sink.add(message)
            subscription = aiter(channel.stream)
            for _ in MESSAGES:
                record.messages.append(await within(anext(subscription)))
            if self.close_first:
                channel.sink.add(CLOSE_COMMAND)
                async for message in subscription:
                    record.messages.append(message)
            else:
                channel.sink.close(SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
            await within(channel.sink.done)
        finally:
            record.close_code = channel.close_code
            record.close_reason = channel.close_reason
            self.records.put_nowait(record)

    @staticmethod
    def process_request(request: Request) -> Response | None:
        """Serve the page on ``/page``; let ``/echo`` through; 404 for anything else."""
        path = urllib.parse.urlsplit(request.path).path
        if path == "/page":
            return 200, [("Content-Type", "text/html; charset=utf-8")], PAGE
        if path == "/echo":
            return None
        return 404, [("Content-Type", "text/plain")], b"Not Found"


async def run_page(
    devtools: DevTools, compression: bool, close_first: bool, tls: Tls | None = None
) -> tuple[dict[str, Any], ConnectionRecord, Relayed]:
    """Serve, open the page in Chromium, and return what the page, the server and the proxy
    saw; over TLS with ``tls`` (the server's ``certfile=``)."""
    test = BrowserTest(close_first)
    secure = tls is not None
    async with wschannel.serve(
        test.handler,
        HOST,
        0,
        compression=compression,
        process_request=test.process_request,
        certfile=None if tls is None else tls.certfile,
    ) as server:
        proxy = RecordingProxy(server.port, plaintext=not secure)
        await proxy.start()
        try:
            query = urllib.parse.urlencode(
                {
                    "ws": f"{'wss' if secure else 'ws'}://{HOST}:{proxy.port}/echo",
                    "closeCommand": CLOSE_COMMAND,
                    "closeCode": CLIENT_CLOSE_CODE,
                    "closeReason": CLIENT_CLOSE_REASON,
                }
            )
            page = f"{'https' if secure else 'http'}://{HOST}:{server.port}/page?{query}"
            async with devtools.page(page) as session:
                seen = await devtools.evaluate(session, "window.result", 3 * TIMEOUT)
            record = await within(test.records.get())
        finally:
            await proxy.stop()
    [relayed] = proxy.connections
    assert isinstance(seen, dict)
    return seen, record, relayed


def check_deflate(
    compression: bool, page: dict[str, Any], record: ConnectionRecord, relayed: Relayed
) -> None:
    """Chromium offered permessage-deflate; the server's answer accepted it iff its compression
    is on; then the two large messages (1 MiB of compressible text, 1 MiB of random bytes)
    took less than 2 MiB on the wire."""
    assert has_deflate(record.offered_extensions)
    if relayed.response_head:  # over TLS the relay sees only ciphertext
        answer = response_headers(relayed.response_head).get("sec-websocket-extensions")
        assert has_deflate(answer) is compression, answer
    assert has_deflate(page["open"]["extensions"]) is compression, page["open"]
    if compression:
        assert relayed.to_client < 2 * LARGE
        assert relayed.to_server < 2 * LARGE
    else:
        assert relayed.to_client > 2 * LARGE
        assert relayed.to_server > 2 * LARGE


@COMPRESSION
async def test_chromium_page_echoes_and_closes_through_wschannel_server(
    devtools: DevTools, compression: bool, scheme: str, request: pytest.FixtureRequest
) -> None:
    files = request.getfixturevalue("tls") if scheme == "wss" else None
    page, record, relayed = await run_page(devtools, compression, close_first=True, tls=files)
    assert page["errors"] == []
    assert page["messages"] == summary([*MESSAGES, CLOSE_COMMAND])
    check_messages(record.messages, MESSAGES)
    check_deflate(compression, page, record, relayed)
    # The page closed: wschannel received its code and reason, and echoed them.
    assert (record.close_code, record.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    assert page["close"] == {
        "code": CLIENT_CLOSE_CODE,
        "reason": CLIENT_CLOSE_REASON,
        "wasClean": True,
    }


@COMPRESSION
async def test_chromium_page_receives_close_from_wschannel_server(
    devtools: DevTools, compression: bool, scheme: str, request: pytest.FixtureRequest
) -> None:
    files = request.getfixturevalue("tls") if scheme == "wss" else None
    page, record, relayed = await run_page(devtools, compression, close_first=False, tls=files)
    assert page["errors"] == []
    assert page["messages"] == summary(MESSAGES)
    check_messages(record.messages, MESSAGES)
    check_deflate(compression, page, record, relayed)
    assert page["close"] == {
        "code": SERVER_CLOSE_CODE,
        "reason": SERVER_CLOSE_REASON,
        "wasClean": True,
    }
    # Chromium echoes the close frame it received.
    assert (record.close_code, record.close_reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
