"""Server metrics (issue 10), over real sockets on 127.0.0.1.

After a known exchange with each server (``wschannel.serve`` and ``wschannel.sync.serve``):
messages of known sizes each way, closes with known codes, a lost connection, a refused
opening handshake of every kind the server has, and a client that does not read while the
server writes, every counter equals what the frames on the wire add up to, and the Prometheus
text says the same. Then: broadcasts (one frame for many, plain and over TLS) are counted,
compressed connections count what their peer counts, and the example of docs/server.md
("Metrics") answers ``GET /metrics`` as it says.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import pytest
import trustme
from conftest import SCALE, TIMEOUT, wait_until, wait_until_sync
from sync_helpers import AsyncioServer, sync_server

import wschannel
import wschannel.sync
from wschannel._wschannel import ClientHandshake, Close, Connection, Request
from wschannel.io import IOWebSocketChannel
from wschannel.metrics import CONTENT_TYPE, ServerMetrics, prometheus
from wschannel.server import Response
from wschannel.sync import SyncWebSocketChannel

T = TypeVar("T")

KEY = "x3JJHMbDL1EzLkh9GBhXDw=="
ALLOWED_ORIGIN = "https://app.example"
OPEN_TIMEOUT = 0.5 * SCALE

PAYLOADS: list[str | bytes] = [
    "héllo",
    b"",
    b"x",
    bytes(125),
    bytes(126),
    bytes(65_535),
    bytes(65_536),
    bytes(100_000),
]
"""What the echo client sends, and gets back: every header length on both sides of its bounds."""

SLOW_COUNT = 64
SLOW_PAYLOAD = bytes(256 * 1024)
"""What the asyncio server sends a client that does not read: 16 MiB, more than the
kernel's buffers take."""

BLOCKING_PAYLOAD = bytes(16 << 20)
QUEUED_PAYLOAD = bytes(100_000)
QUEUED_COUNT = 3
"""The thread server's sender blocks on :data:`BLOCKING_PAYLOAD` (the client does not read)
while :data:`QUEUED_COUNT` other threads queue one :data:`QUEUED_PAYLOAD` each behind it."""


def frame_len(size: int, *, masked: bool) -> int:
    """Bytes on the wire of one frame with ``size`` bytes of payload (RFC 6455 §5.2)."""
    header = 2 if size < 126 else 4 if size < 65_536 else 10
    return header + (4 if masked else 0) + size


def size_of(message: str | bytes) -> int:
    return len(message.encode() if isinstance(message, str) else message)


def close_len(reason: str, *, masked: bool) -> int:
    """A close frame with a code and ``reason``."""
    return frame_len(2 + len(reason.encode()), masked=masked)


def upgrade(path: str = "/", extra: str = "", *, key: bool = True, version: int = 13) -> bytes:
    """An upgrade request head, with ``extra`` header lines."""
    key_line = f"Sec-WebSocket-Key: {KEY}\r\n" if key else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\n{key_line}Sec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


REFUSALS: list[tuple[bytes, int, str]] = [
    (upgrade(extra="Host: evil.example\r\n"), 400, "malformed"),  # refused while parsing
    (upgrade(key=False), 400, "malformed"),  # refused by the upgrade checks
    (b"GET /plain HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404, "not_websocket"),
    (upgrade(extra="Origin: https://evil.example\r\n"), 403, "origin"),
    (upgrade(version=12), 426, "version"),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431, "too_large"),
    (upgrade("/private"), 401, "process_request"),
    (upgrade("/boom"), 500, "process_request_error"),
]
"""A request refused for each reason, the status it gets, and the reason it is counted under."""


def route(request: Request) -> Response | None:
    """The servers' process_request."""
    if request.path == "/private":
        return 401, [], b"Who are you?\n"
    if request.path == "/boom":
        raise RuntimeError("process_request failed, as the test wants")
    return None


def refused_status(port: int, request: bytes) -> int:
    """Send a raw request; the status of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"no answer to {request[:40]!r}"
            head += chunk
        return int(head.split(b" ", 2)[1])


def dropped(sock: socket.socket) -> None:
    """Wait until the server closes ``sock`` (an idle connection at its open_timeout)."""
    sock.settimeout(TIMEOUT)
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1) == b""
    sock.close()


class RawClient:
    """A client on a blocking socket, driven by the engine by hand: it reads only when told."""

    def __init__(self, port: int, path: str, *, rcvbuf: int | None = None) -> None:
        self.sock = sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(TIMEOUT)
        sock.connect(("127.0.0.1", port))
        handshake = ClientHandshake(f"127.0.0.1:{port}", path)
        sock.sendall(handshake.request())
        while not handshake.receive_data(sock.recv(1)):  # one byte at a time: the head only
            pass
        self.conn = Connection(True, max_message_size=None)
        self.events: list[object] = []

    def read_until(self, done: Callable[[list[object]], bool]) -> list[object]:
        """Read and parse until ``done(events)``; the events."""
        while not done(self.events):
            data = self.sock.recv(1 << 18)
            assert data, f"EOF after {len(self.events)} events"
            self.events.extend(self.conn.receive_data(data))
        return self.events

    def answer_close_and_wait_for_eof(self) -> None:
        """Read up to the server's close frame, echo it, then read until the server closes."""
        self.read_until(lambda events: any(isinstance(event, Close) for event in events))
        self.sock.sendall(self.conn.data_to_send())
        while self.sock.recv(1 << 16):
            pass
        self.sock.close()


class Flavour(Protocol):
    """One of the two servers, seen from the test's thread."""

    port: int
    open_timeouts: int  # idle connections dropped at open_timeout in the test
    extra_refusals: tuple[tuple[int, str], ...]  # refusals only this server has

    def metrics(self) -> ServerMetrics: ...
    def prometheus(self) -> str: ...
    def pending_handshakes(self) -> int: ...


@dataclass
class Slow:
    """The slow client's story, shared by the handler and the test's thread."""

    backlog: threading.Event = field(default_factory=threading.Event)
    proceed: threading.Event = field(default_factory=threading.Event)
    expected_high_water: int = 0
    messages: int = 0  # what the handler sent
    bytes: int = 0


class AsyncioFlavour:
    """``wschannel.serve`` in a background thread's loop (metrics are read in that loop)."""

    open_timeouts = 2  # the two connections that keep max_pending_handshakes full
    extra_refusals: tuple[tuple[int, str], ...] = ((503, "too_many_pending"),)

    def __init__(self, runner: AsyncioServer) -> None:
        self.runner = runner
        self.port = runner.server.port

    def _in_loop(self, function: Callable[[], T]) -> T:
        async def call() -> T:
            return function()

        return self.runner.run(call())

    def metrics(self) -> ServerMetrics:
        server = self.runner.server
        return self._in_loop(lambda: server.metrics)

    def prometheus(self) -> str:
        server = self.runner.server
        return self._in_loop(lambda: prometheus(server))

    def pending_handshakes(self) -> int:
        server = self.runner.server
        return self._in_loop(lambda: server.pending_handshakes)


class SyncFlavour:
    """``wschannel.sync.serve`` serving in a thread (metrics are read from any thread)."""

    open_timeouts = 1
    extra_refusals: tuple[tuple[int, str], ...] = ()

    def __init__(self, server: wschannel.sync.Server) -> None:
        self.server = server
        self.port = server.port

    def metrics(self) -> ServerMetrics:
        return self.server.metrics

    def prometheus(self) -> str:
        return prometheus(self.server)

    def pending_handshakes(self) -> int:
        raise NotImplementedError


def asyncio_handler(slow: Slow) -> Callable[[IOWebSocketChannel], Any]:
    async def handler(channel: IOWebSocketChannel) -> None:
        assert channel.request is not None
        path = channel.request.path
        if path == "/echo":
            async for message in channel.stream:
                channel.sink.add(message)
        elif path == "/slow":
            for _ in range(SLOW_COUNT):
                channel.sink.add(SLOW_PAYLOAD)
            slow.messages = SLOW_COUNT
            slow.bytes = SLOW_COUNT * frame_len(len(SLOW_PAYLOAD), masked=False)
            # The write buffer now holds everything the kernel did not take, and only shrinks
            # from here (until the close frame, once the client has read it all).
            protocol = channel._transport_protocol
            assert protocol is not None and protocol.transport is not None
            slow.expected_high_water = protocol.transport.get_write_buffer_size()
            slow.backlog.set()
            await asyncio.to_thread(slow.proceed.wait, TIMEOUT)
        # "/quit" returns at once: the server closes with 1000.

    return handler


def sync_handler(slow: Slow) -> Callable[[SyncWebSocketChannel], None]:
    def handler(channel: SyncWebSocketChannel) -> None:
        assert channel.request is not None
        path = channel.request.path
        if path == "/echo":
            for message in channel.stream:
                channel.sink.add(message)
        elif path == "/slow":
            blocked = threading.Thread(target=channel.sink.add, args=(BLOCKING_PAYLOAD,))
            blocked.start()
            # The big frame is being written.
            wait_until_sync(channel._write_lock.locked, what="the big frame is being written")
            queued = [
                threading.Thread(target=channel.sink.add, args=(QUEUED_PAYLOAD,))
                for _ in range(QUEUED_COUNT)
            ]
            for thread in queued:
                thread.start()
            slow.messages = 1 + QUEUED_COUNT
            slow.bytes = frame_len(len(BLOCKING_PAYLOAD), masked=False) + QUEUED_COUNT * (
                frame_len(len(QUEUED_PAYLOAD), masked=False)
            )
            # Once every queued frame is in: what waited behind the blocked write.
            slow.expected_high_water = QUEUED_COUNT * frame_len(len(QUEUED_PAYLOAD), masked=False)
            slow.backlog.set()
            slow.proceed.wait(TIMEOUT)
            for thread in [blocked, *queued]:
                thread.join(TIMEOUT)

    return handler


@pytest.fixture(params=["asyncio", "sync"])
def flavour(request: pytest.FixtureRequest) -> Iterator[tuple[Flavour, Slow]]:
    slow = Slow()
    options: dict[str, Any] = {
        "compression": False,
        "allowed_origins": [ALLOWED_ORIGIN],
        "process_request": route,
        "open_timeout": OPEN_TIMEOUT,
    }
    if request.param == "asyncio":
        runner = AsyncioServer(asyncio_handler(slow), max_pending_handshakes=2, **options)
        try:
            yield AsyncioFlavour(runner), slow
        finally:
            runner.stop()
    else:
        with sync_server(sync_handler(slow), **options) as server:
            yield SyncFlavour(server), slow


def test_counters_after_a_known_exchange(flavour: tuple[Flavour, Slow]) -> None:
    server, slow = flavour
    url = f"ws://127.0.0.1:{server.port}"
    assert server.metrics() == ServerMetrics(0, 0, 0, 0, 0, 0, {}, {}, 0)

    # An echo: the payloads both ways, counted while the connection is open; then a close
    # with 4001 from the client.
    echo_in = sum(frame_len(size_of(m), masked=True) for m in PAYLOADS)
    echo_out = sum(frame_len(size_of(m), masked=False) for m in PAYLOADS)
    client = wschannel.sync.connect(f"{url}/echo")
    for message in PAYLOADS:
        client.sink.add(message)
    assert [client.receive(TIMEOUT) for _ in PAYLOADS] == PAYLOADS
    live = server.metrics()
    assert live.connections_open == 1
    assert live.connections_total == 1
    assert (live.messages_received, live.messages_sent) == (len(PAYLOADS), len(PAYLOADS))
    assert (live.bytes_received, live.bytes_sent) == (echo_in, echo_out)
    assert live.close_codes == {}
    client.close(4001, "bye")
    assert client.close_code == 4001

    # The handler returns at once: the server closes with 1000, the client answers.
    with wschannel.sync.connect(f"{url}/quit") as quitting:
        assert list(quitting.stream) == []
        quitting.wait_closed(TIMEOUT)
    assert quitting.close_code == 1000

    # A client that goes away without a close frame: 1006, nothing sent either way.
    RawClient(server.port, "/echo").sock.close()

    # A client that does not read while the server writes: the write buffer grows.
    reader = RawClient(server.port, "/slow", rcvbuf=64 * 1024)
    assert slow.backlog.wait(TIMEOUT)
    assert slow.expected_high_water > 256 * 1024, "the kernel took it all: no backlog to see"
    wait_until_sync(
        lambda: server.metrics().write_buffer_high_water == slow.expected_high_water,
        what=f"the high-water mark is {slow.expected_high_water}",
    )
    reader.read_until(lambda events: len(events) == slow.messages)
    slow.proceed.set()
    reader.answer_close_and_wait_for_eof()

    # Every refusal the server has.
    for request, status, _ in REFUSALS:
        assert refused_status(server.port, request) == status
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    if isinstance(server, AsyncioFlavour):  # max_pending_handshakes=2 is reached: 503
        wait_until_sync(lambda: server.pending_handshakes() == 2, what="two handshakes are pending")
        assert refused_status(server.port, upgrade("/echo")) == 503
    else:
        idle.pop().close()  # the thread server has no 503: one idle connection is enough
    for sock in idle:
        dropped(sock)

    wait_until_sync(
        lambda: (
            sum(server.metrics().close_codes.values()) == 4
            and server.metrics().connections_open == 0
        ),
        what="every connection is closed",
    )
    refusals: dict[tuple[int | None, str], int] = {}
    for _, status, reason in REFUSALS:
        refusals[status, reason] = refusals.get((status, reason), 0) + 1
    for key in server.extra_refusals:
        refusals[key] = 1
    wait_until_sync(
        lambda: server.metrics().refusals.get((None, "open_timeout")) == server.open_timeouts,
        what="the idle connections are counted",
    )
    refusals[None, "open_timeout"] = server.open_timeouts
    close_1000 = close_len("", masked=False)  # the server's close frame after /quit, /slow
    echo_1000 = close_len("", masked=True)  # the client's answer
    expected = ServerMetrics(
        connections_open=0,
        connections_total=4,
        messages_received=len(PAYLOADS),
        messages_sent=len(PAYLOADS) + slow.messages,
        bytes_received=echo_in + close_len("bye", masked=True) + 2 * echo_1000,
        bytes_sent=echo_out + close_len("bye", masked=False) + slow.bytes + 2 * close_1000,
        close_codes={1000: 2, 1006: 1, 4001: 1},
        refusals=refusals,
        write_buffer_high_water=slow.expected_high_water,
    )
    final = server.metrics()
    assert final == expected
    assert isinstance(final.close_codes, MappingProxyType)  # the snapshot cannot change

    # The same in the Prometheus text format.
    families, samples = parse_exposition(server.prometheus())
    assert samples == expected_samples(expected)
    assert set(families) == {name for name, _ in samples} | {
        "wschannel_closes_total",
        "wschannel_handshake_refusals_total",
    }
    for name, kind in families.items():
        assert kind == ("counter" if name.endswith("_total") else "gauge"), name


Labels = tuple[tuple[str, str], ...]
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(?:,|$)')


def parse_exposition(text: str) -> tuple[dict[str, str], dict[tuple[str, Labels], int]]:
    """A strict reading of the Prometheus text format (0.0.4): ``# HELP`` then ``# TYPE``
    before a family's samples, each sample once. The families' types and the samples."""
    assert text.endswith("\n")
    families: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[tuple[str, Labels], int] = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            assert help_text and name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert name in helped and name not in families, line
            assert kind in {"counter", "gauge"}, line
            families[name] = kind
        else:
            match = SAMPLE.fullmatch(line)
            assert match is not None, line
            name, label_text, value = match.groups()
            assert name in families, f"{name} has no TYPE line before it"
            labels: list[tuple[str, str]] = []
            if label_text is not None:
                at = 0
                while at < len(label_text):
                    label = LABEL.match(label_text, at)
                    assert label is not None, line
                    labels.append((label[1], label[2]))
                    at = label.end()
            key = (name, tuple(labels))
            assert key not in samples, line
            samples[key] = int(value)
    return families, samples


def expected_samples(metrics: ServerMetrics) -> dict[tuple[str, Labels], int]:
    samples: dict[tuple[str, Labels], int] = {
        ("wschannel_connections_open", ()): metrics.connections_open,
        ("wschannel_connections_total", ()): metrics.connections_total,
        ("wschannel_messages_received_total", ()): metrics.messages_received,
        ("wschannel_messages_sent_total", ()): metrics.messages_sent,
        ("wschannel_received_bytes_total", ()): metrics.bytes_received,
        ("wschannel_sent_bytes_total", ()): metrics.bytes_sent,
        ("wschannel_write_buffer_high_water_bytes", ()): metrics.write_buffer_high_water,
    }
    for code, count in metrics.close_codes.items():
        samples["wschannel_closes_total", (("code", str(code)),)] = count
    for (status, reason), count in metrics.refusals.items():
        labels = (("code", "none" if status is None else str(status)), ("reason", reason))
        samples["wschannel_handshake_refusals_total", labels] = count
    return samples


def test_prometheus_text_is_exactly_this() -> None:
    metrics = ServerMetrics(
        connections_open=1,
        connections_total=3,
        messages_received=10,
        messages_sent=12,
        bytes_received=345,
        bytes_sent=678,
        close_codes={1000: 1, 1006: 1},
        refusals={(None, "open_timeout"): 2, (403, "origin"): 1},
        write_buffer_high_water=65_536,
    )
    assert prometheus(metrics, prefix="chat") == (
        "# HELP chat_connections_open WebSocket connections open now.\n"
        "# TYPE chat_connections_open gauge\n"
        "chat_connections_open 1\n"
        "# HELP chat_connections_total WebSocket connections opened (opening handshake "
        "completed).\n"
        "# TYPE chat_connections_total counter\n"
        "chat_connections_total 3\n"
        "# HELP chat_messages_received_total Text and binary messages received.\n"
        "# TYPE chat_messages_received_total counter\n"
        "chat_messages_received_total 10\n"
        "# HELP chat_messages_sent_total Text and binary messages sent.\n"
        "# TYPE chat_messages_sent_total counter\n"
        "chat_messages_sent_total 12\n"
        "# HELP chat_received_bytes_total Bytes of WebSocket frames received, as on the wire.\n"
        "# TYPE chat_received_bytes_total counter\n"
        "chat_received_bytes_total 345\n"
        "# HELP chat_sent_bytes_total Bytes of WebSocket frames sent, as on the wire.\n"
        "# TYPE chat_sent_bytes_total counter\n"
        "chat_sent_bytes_total 678\n"
        "# HELP chat_closes_total WebSocket connections ended, by close code (1006: lost "
        "without a close frame).\n"
        "# TYPE chat_closes_total counter\n"
        'chat_closes_total{code="1000"} 1\n'
        'chat_closes_total{code="1006"} 1\n'
        "# HELP chat_handshake_refusals_total Opening handshakes answered without an upgrade, "
        "by HTTP status and reason.\n"
        "# TYPE chat_handshake_refusals_total counter\n"
        'chat_handshake_refusals_total{code="none",reason="open_timeout"} 2\n'
        'chat_handshake_refusals_total{code="403",reason="origin"} 1\n'
        "# HELP chat_write_buffer_high_water_bytes The largest write buffer a connection has "
        "had, in bytes.\n"
        "# TYPE chat_write_buffer_high_water_bytes gauge\n"
        "chat_write_buffer_high_water_bytes 65536\n"
    )


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_broadcast_frames_count_as_messages_sent(tls: bool) -> None:
    """A broadcast's shared frame bypasses the connection's encoder: it is counted all the
    same, on a direct socket (plain) and on an asyncio transport (TLS)."""
    server_context = client_context = None
    if tls:
        ca = trustme.CA()
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(server_context)
        client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(client_context)
    done = asyncio.Event()

    async def wait_for_the_end(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        done.set()

    async with wschannel.serve(
        wait_for_the_end, "127.0.0.1", 0, compression=False, ssl=server_context
    ) as server:
        scheme = "wss" if tls else "ws"
        clients = [
            IOWebSocketChannel.connect(f"{scheme}://127.0.0.1:{server.port}", ssl=client_context)
            for _ in range(2)
        ]
        for client in clients:
            await asyncio.wait_for(client.ready, TIMEOUT)
        await wait_until(lambda: len(server.connections) == 2)
        assert wschannel.broadcast(server.connections, "to all") == 2
        assert wschannel.broadcast(server.connections, bytes(70_000)) == 2
        for client in clients:
            subscription = aiter(client.stream)
            assert await asyncio.wait_for(anext(subscription), TIMEOUT) == "to all"
            assert await asyncio.wait_for(anext(subscription), TIMEOUT) == bytes(70_000)
        metrics = server.metrics
        assert metrics.messages_sent == 4
        assert metrics.bytes_sent == 2 * (
            frame_len(6, masked=False) + frame_len(70_000, masked=False)
        )
        for client in clients:
            await asyncio.wait_for(client.sink.close(), TIMEOUT)
        await wait_until(lambda: server.metrics.connections_open == 0)
        metrics = server.metrics
        assert metrics.messages_sent == 4
        assert metrics.bytes_sent == 2 * (
            frame_len(6, masked=False)
            + frame_len(70_000, masked=False)
            + frame_len(0, masked=False)
        )
        assert metrics.close_codes == {1005: 2}


@pytest.mark.parametrize("kind", ["asyncio", "sync"])
def test_compressed_connections_count_what_their_peer_counts(kind: str) -> None:
    """With permessage-deflate the bytes are the compressed frames: the server's counts are
    the client engine's, the other way round."""

    async def async_echo(channel: IOWebSocketChannel) -> None:
        async for message in channel.stream:
            channel.sink.add(message)

    def echo(channel: SyncWebSocketChannel) -> None:
        for message in channel.stream:
            channel.sink.add(message)

    messages: list[str | bytes] = ["compress me " * 100, bytes(50_000), "short"]

    def exchange(port: int, metrics: Callable[[], ServerMetrics]) -> None:
        client = wschannel.sync.connect(f"ws://127.0.0.1:{port}")
        for message in messages:
            client.sink.add(message)
        assert [client.receive(TIMEOUT) for _ in messages] == messages
        client.close(1000)
        wait_until_sync(lambda: metrics().connections_open == 0, what="the connection is closed")
        received, sent, bytes_received, bytes_sent = client._conn.counters
        assert bytes_sent < sum(size_of(m) for m in messages) // 10  # it was compressed
        final = metrics()
        assert (final.messages_received, final.messages_sent) == (sent, received) == (3, 3)
        assert (final.bytes_received, final.bytes_sent) == (bytes_sent, bytes_received)

    if kind == "asyncio":
        runner = AsyncioServer(async_echo)
        try:
            flavour = AsyncioFlavour(runner)
            exchange(flavour.port, flavour.metrics)
        finally:
            runner.stop()
    else:
        with sync_server(echo) as server:
            exchange(server.port, lambda: server.metrics)


def docs_metrics_example() -> str:
    """The Python program of docs/server.md's "Metrics" section, as it is."""
    guide = (Path(__file__).resolve().parents[1] / "docs" / "server.md").read_text()
    section = guide[guide.index("\n## Metrics\n") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


async def test_the_docs_example_answers_get_metrics() -> None:
    """What the guide's example does, on a free port: an echo, then ``GET /metrics``."""
    source = docs_metrics_example()
    assert '"0.0.0.0", 8765' in source and source.rstrip().endswith("asyncio.run(main())")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = source.replace('"0.0.0.0", 8765', f'"127.0.0.1", {port}')
    source = source.rstrip().removesuffix("asyncio.run(main())")
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(source, "docs/server.md", "exec"), namespace)
    main = asyncio.get_running_loop().create_task(namespace["main"]())
    try:
        client = await connect_when_listening(port, "/chat")
        client.sink.add("hello")
        assert await asyncio.wait_for(anext(aiter(client.stream)), TIMEOUT) == "hello"
        await asyncio.wait_for(client.sink.close(1000), TIMEOUT)

        first = await get(port, "/metrics")
        status, headers, body = await get(port, "/metrics")
        assert status == 200 and first[0] == 200
        assert headers["content-type"] == CONTENT_TYPE
        _, samples = parse_exposition(body.decode())
        chat = frame_len(5, masked=True), frame_len(5, masked=False)
        close = close_len("", masked=True), close_len("", masked=False)
        assert samples == {
            ("wschannel_connections_open", ()): 0,
            ("wschannel_connections_total", ()): 1,
            ("wschannel_messages_received_total", ()): 1,
            ("wschannel_messages_sent_total", ()): 1,
            ("wschannel_received_bytes_total", ()): chat[0] + close[0],
            ("wschannel_sent_bytes_total", ()): chat[1] + close[1],
            ("wschannel_closes_total", (("code", "1000"),)): 1,
            # The first scrape, answered by process_request instead of an upgrade.
            (
                "wschannel_handshake_refusals_total",
                (("code", "200"), ("reason", "process_request")),
            ): 1,
            ("wschannel_write_buffer_high_water_bytes", ()): 0,
        }
    finally:
        main.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(main, TIMEOUT)


async def connect_when_listening(port: int, path: str) -> IOWebSocketChannel:
    """Connect once the example listens (a TCP connection that closes at once, before its
    upgrade request, counts nowhere)."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert asyncio.get_running_loop().time() < deadline, "the example does not listen"
            await asyncio.sleep(0.01)  # the pace of the retries
            continue
        writer.close()
        break
    client = IOWebSocketChannel.connect(f"ws://127.0.0.1:{port}{path}", compression=False)
    await asyncio.wait_for(client.ready, TIMEOUT)
    return client


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP GET: the status, headers (lower-case names) and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body)
    return int(status_line.split(" ")[1]), headers, body
