"""What every interoperability test shares: the messages, the closes, and wschannel's two ends.

Each peer's module runs the same script in both roles:

- **wschannel's server** (:func:`wschannel_server`) echoes every message, records what it
  received, and answers :data:`CLOSE_COMMAND` by closing with :data:`SERVER_CLOSE_CODE` and
  :data:`SERVER_CLOSE_REASON`. A foreign client sends :data:`MESSAGES`, checks the echoes,
  and closes with :data:`CLIENT_CLOSE_CODE` and :data:`CLIENT_CLOSE_REASON`; or it sends the
  command and checks the server's close.
- **wschannel's client** (:func:`run_wschannel_client`) does the same against a foreign
  server that behaves like the one above and records what it received in a
  :class:`ConnectionRecord`.

Every wait is bounded and scales from :data:`SCALE` (``WSCHANNEL_TEST_TIMEOUT_SCALE``).
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import pytest

import wschannel
from wschannel._direct import DirectTransport
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel
from wschannel.server import Server

T = TypeVar("T")

SCALE: Final = float(os.environ.get("WSCHANNEL_TEST_TIMEOUT_SCALE", "1"))
"""The one constant every wait in this suite scales from."""
TIMEOUT: Final = 10.0 * SCALE
"""How long one step may take (a few MiB cross loopback, a browser starts)."""

HOST: Final = "127.0.0.1"

LARGE: Final = 1 << 20
"""The size of the large messages: 1 MiB, which is also wschannel's default limit."""


def large_text() -> str:
    """Exactly :data:`LARGE` bytes of UTF-8 with 1- to 4-byte characters (compressible)."""
    unit = "wschannel: é € 𝄞 ✓ "
    text = unit * (LARGE // len(unit.encode()))
    return text + "." * (LARGE - len(text.encode()))


def large_binary() -> bytes:
    """:data:`LARGE` pseudo-random bytes (incompressible), the same on every run."""
    return random.Random(7692).randbytes(LARGE)


MESSAGES: Final[tuple[Message, ...]] = (
    "Hello, wschannel!",
    "Grüße — 日本語 — 🎉 ½ ∞",
    bytes(range(256)),
    "",
    b"",
    large_text(),
    large_binary(),
    *(f"message {i}" if i % 2 == 0 else f"message {i}".encode() for i in range(20)),
)
"""What each peer sends: text (ASCII and not), every byte value, empty messages of both
types, 1 MiB of each type, then 20 small messages of alternating types that must stay in
order."""

CLOSE_COMMAND: Final = "please close"
"""The text message that asks the other side to start the closing handshake."""
CLIENT_CLOSE_CODE: Final = 3001
CLIENT_CLOSE_REASON: Final = "client is done ✓"
SERVER_CLOSE_CODE: Final = 4001
SERVER_CLOSE_REASON: Final = "server is done — ✓"


def describe(message: object) -> str:
    """A short description of a message for assertion messages (never 1 MiB of it)."""
    if isinstance(message, str | bytes | bytearray | memoryview):
        data = message.encode() if isinstance(message, str) else bytes(message)
        digest = hashlib.sha256(data).hexdigest()[:12]
        return f"{type(message).__name__}[{len(data)} bytes, sha256 {digest}…]"
    return repr(message)


def check_messages(actual: Sequence[object], expected: Sequence[Message]) -> None:
    """Assert the same messages, in order, each of the same type (str or bytes) and bytes."""
    assert len(actual) == len(expected), (
        f"{len(actual)} messages instead of {len(expected)}: "
        f"{[describe(m) for m in actual]} != {[describe(m) for m in expected]}"
    )
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        same = type(got) is type(want) and got == want
        assert same, f"message {index}: got {describe(got)}, expected {describe(want)}"


def has_deflate(extensions: str | None) -> bool:
    """Whether a ``Sec-WebSocket-Extensions`` value accepts permessage-deflate."""
    return extensions is not None and any(
        item.split(";")[0].strip().lower() == "permessage-deflate" for item in extensions.split(",")
    )


async def within(awaitable: Awaitable[T], timeout: float = TIMEOUT) -> T:
    """Await within ``timeout`` seconds, or fail with ``TimeoutError``."""
    return await asyncio.wait_for(awaitable, timeout)


COMPRESSION: Final = pytest.mark.parametrize(
    "compression", [True, False], ids=["with_compression", "without_compression"]
)
"""Runs a test with permessage-deflate offered (or accepted) by wschannel, and without."""


@dataclass
class ConnectionRecord:
    """What one side of one connection saw, recorded when the connection has closed."""

    messages: list[Message] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    extensions: str | None = None
    """The ``Sec-WebSocket-Extensions`` value the server accepted, if known."""
    offered_extensions: str | None = None
    """The ``Sec-WebSocket-Extensions`` value the client offered, if known."""


@dataclass
class Tls:
    """A test authority's certificate for 127.0.0.1 and localhost: the server's chain and key
    in one PEM file (``certfile``, also the files a peer server loads), the same as an
    ``ssl.SSLContext`` (``server``), and a client context that trusts it (``client``)."""

    certfile: Path
    keyfile: Path
    cafile: Path
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    import trustme

    directory = tmp_path_factory.mktemp("interop-tls")
    authority = trustme.CA()
    cert = authority.issue_cert(HOST, "localhost")
    certfile, keyfile, cafile = (directory / name for name in ("chain.pem", "key.pem", "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    authority.cert_pem.write_to_path(str(cafile))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return Tls(certfile, keyfile, cafile, server, client)


@pytest.fixture
def scheme() -> str:
    """``ws`` or ``wss``: a module that runs its tests over TLS too overrides this fixture
    with both (over TLS, wschannel's server takes ``certfile=`` and its client the
    context that trusts it: TLS in the engine)."""
    return "ws"


class WschannelServer:
    """wschannel's server running the echo script; one record per finished connection."""

    def __init__(
        self,
        server: Server,
        records: asyncio.Queue[ConnectionRecord],
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server
        self.records = records
        self.client_ssl = client_ssl
        """The context a client trusts this server with (over TLS), else None."""

    @property
    def url(self) -> str:
        scheme = "ws" if self.client_ssl is None else "wss"
        return f"{scheme}://{HOST}:{self.server.port}/echo"

    async def next_record(self) -> ConnectionRecord:
        """The record of the next connection to finish (its closing handshake included)."""
        return await within(self.records.get())


def echo_handler(
    records: asyncio.Queue[ConnectionRecord],
) -> Callable[[IOWebSocketChannel], Awaitable[None]]:
    """The echo script as a wschannel handler that puts a record in ``records``."""

    async def handler(channel: IOWebSocketChannel) -> None:
        request = channel.request
        record = ConnectionRecord(
            offered_extensions=None
            if request is None
            else request.header("sec-websocket-extensions")
        )
        try:
            async for message in channel.stream:
                record.messages.append(message)
                if message == CLOSE_COMMAND:
                    channel.sink.close(SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
                    break
                channel.sink.add(message)
            await within(channel.sink.done)
        finally:
            record.close_code = channel.close_code
            record.close_reason = channel.close_reason
            records.put_nowait(record)

    return handler


@pytest.fixture
async def wschannel_server(
    compression: bool, scheme: str, request: pytest.FixtureRequest
) -> AsyncIterator[WschannelServer]:
    """wschannel's echo server on 127.0.0.1, with permessage-deflate on or off, over TLS
    (``certfile=``) when ``scheme`` is ``wss``."""
    records: asyncio.Queue[ConnectionRecord] = asyncio.Queue()
    handler = echo_handler(records)
    if scheme == "ws":
        async with wschannel.serve(handler, HOST, 0, compression=compression) as server:
            yield WschannelServer(server, records)
        return
    files: Tls = request.getfixturevalue("tls")
    async with wschannel.serve(
        handler, HOST, 0, compression=compression, certfile=files.certfile
    ) as server:
        yield WschannelServer(server, records, files.client)


async def run_wschannel_client(
    url: str, *, compression: bool, close_first: bool, ssl: ssl.SSLContext | None = None
) -> tuple[list[Message], int | None, str | None]:
    """wschannel's client side of the script; returns what it received and the close.

    With ``close_first``, it sends :data:`MESSAGES`, reads their echoes, and closes with
    :data:`CLIENT_CLOSE_CODE`. Otherwise it sends two messages and :data:`CLOSE_COMMAND`,
    and reads until the server's close ends the stream.
    """
    channel = IOWebSocketChannel.connect(url, compression=compression, ssl=ssl)
    try:
        await within(channel.ready)
        if ssl is not None:  # a context that maps to rustls: TLS in the engine
            protocol = channel._transport_protocol
            assert protocol is not None
            assert isinstance(protocol.transport, DirectTransport)
        subscription = aiter(channel.stream)
        received: list[Message] = []
        if close_first:
            for message in MESSAGES:
                channel.sink.add(message)
            for _ in MESSAGES:
                received.append(await within(anext(subscription)))
            await within(channel.sink.close(CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON))
        else:
            for message in CLOSED_BY_SERVER:
                channel.sink.add(message)
            received = await within(collect(subscription))
            await within(channel.sink.done)
    except BaseException:
        channel.sink.close()
        raise
    return received, channel.close_code, channel.close_reason


CLOSED_BY_SERVER: Final[tuple[Message, ...]] = ("before the close", b"\x00\xff", CLOSE_COMMAND)
"""What a client sends in the server-initiated close tests; the server echoes the first two."""


async def collect(messages: AsyncIterator[Message]) -> list[Message]:
    """Every message until the stream ends."""
    return [message async for message in messages]
