"""Reconnecting clients, and the errors they decide on, against real servers on 127.0.0.1:
an HTTP server that refuses the upgrade with a status (503 with ``Retry-After``, 429, 403),
a wschannel server stopped and started again on the same port, a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

import pytest
from conftest import (
    SHORT,
    TIMEOUT,
    RawHandler,
    RawServer,
    accept_upgrade,
    echo,
    frame,
    next_message,
    read_request,
    unmask,
    wait,
    wait_until,
)
from sync_helpers import accept_upgrade as sync_accept_upgrade
from sync_helpers import raw_server as sync_raw_server
from sync_helpers import read_request as sync_read_request

import wschannel
import wschannel.sync
from wschannel import WebSocketChannelException, backoff
from wschannel._reconnect import MAX_RETRY_AFTER, retry_after, retryable
from wschannel.exceptions import InvalidStatus, ProxyError
from wschannel.io import IOWebSocketChannel

StartRaw = Callable[[RawHandler], Awaitable[RawServer]]


def refusal(status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """An HTTP response refusing the upgrade, with an empty body."""
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Length: 0", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answering(*responses: bytes | None) -> tuple[RawHandler, list[int]]:
    """A raw handler answering its n-th request with ``responses[n]`` (``None``: accept the
    upgrade and echo the client's close; the last one repeats), and the list
    where it counts the requests."""
    count: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        response = responses[min(len(count), len(responses) - 1)]
        count.append(1)
        if response is None:
            await accept_upgrade(reader, writer)
            opcode, payload = await unmask(reader)  # the client's close frame: echoed
            assert opcode == 0x88, opcode
            writer.write(frame(0x8, payload))
            return
        await read_request(reader)
        writer.write(response)
        await writer.drain()

    return handle, count


# The error for a refused upgrade.


async def test_client_reports_a_refusal_with_its_status_and_headers(raw_server: StartRaw) -> None:
    handle, _ = answering(refusal(503, "Service Unavailable", [("Retry-After", "7")]))
    server = await raw_server(handle)
    channel = IOWebSocketChannel.connect(server.url)
    with pytest.raises(InvalidStatus) as caught:
        await channel.ready
    error = caught.value
    assert isinstance(error, WebSocketChannelException)
    assert error.status == 503
    assert error.header("retry-after") == "7"
    assert ("Retry-After", "7") in error.headers
    assert "503" in str(error)
    assert error.inner is not None and error.__cause__ is error.inner


def test_blocking_client_reports_a_refusal_with_its_status_and_headers() -> None:
    def handle(sock: socket.socket) -> None:
        sync_read_request(sock)
        sock.sendall(refusal(429, "Too Many Requests", [("Retry-After", "3")]))

    with sync_raw_server(handle) as server, pytest.raises(InvalidStatus) as caught:
        wschannel.sync.connect(server.url)
    assert caught.value.status == 429
    assert caught.value.header("Retry-After") == "3"


async def test_client_reports_a_bad_101_without_a_status_error(raw_server: StartRaw) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: wrong\r\n\r\n"
        )

    server = await raw_server(handle)
    with pytest.raises(WebSocketChannelException) as caught:
        await IOWebSocketChannel.connect(server.url)
    assert not isinstance(caught.value, InvalidStatus)


# Reconnecting (asyncio).


class Records(logging.Handler):
    """The ``wschannel.client`` log, kept; ``seen(text)`` waits for a record containing
    ``text`` from any thread (an event per text asked)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self.guard = threading.Lock()
        self.waiting: dict[str, threading.Event] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        with self.guard:
            self.messages.append(message)
            for text, event in self.waiting.items():
                if text in message:
                    event.set()

    def event(self, text: str) -> threading.Event:
        with self.guard:
            event = self.waiting.setdefault(text, threading.Event())
            if any(text in message for message in self.messages):
                event.set()
            return event

    def count(self, text: str) -> int:
        with self.guard:
            return sum(text in message for message in self.messages)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("wschannel.client")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def quick(count: int | None = None) -> Callable[[], Iterable[float]]:
    """``reconnect_delays``: ``count`` short delays (``None``: endless)."""
    if count is None:
        return lambda: itertools.repeat(SHORT / 20)
    return lambda: [SHORT / 20] * count


async def test_client_reconnects_to_a_server_restarted_on_the_same_port(
    records: Records,
) -> None:
    server = await wschannel.serve(echo, "127.0.0.1", 0)
    port = server.port
    url = f"ws://127.0.0.1:{port}"
    servers = [server]

    async def restart_once_refused() -> None:
        # Started again once the client has seen the port refuse an attempt.
        await wait_until(records.event("failed (attempt 1)").is_set, what="an attempt refused")
        servers.append(await wschannel.serve(echo, "127.0.0.1", port))

    restarting: asyncio.Task[None] | None = None
    echoed: list[object] = []
    try:
        async for channel in wschannel.connect(url, reconnect_delays=quick()):
            channel.sink.add(f"hello {len(echoed)}")
            messages = aiter(channel.stream)
            echoed.append(await next_message(messages))
            if len(echoed) == 2:
                break
            restarting = asyncio.ensure_future(restart_once_refused())
            servers[0].close()  # the connection closes with 1001
            await servers[0].wait_closed()
            async for _ in messages:  # until it ends
                pass
            assert channel.close_code == 1001
        assert echoed == ["hello 0", "hello 1"]
        async with channel:  # the one the loop left open: closed with 1000
            pass
        assert channel.close_code == 1000
        assert restarting is not None
        await wait(restarting)
    finally:
        for running in servers:
            running.close()
    assert records.count(f"Connection to {url} closed (1001); reconnecting in") == 1
    assert records.count("Connecting to " + url + " failed (attempt 1); retrying in") == 1
    assert records.count(f"Connected to {url} after") == 1


async def test_client_retries_503_and_429_honouring_retry_after(
    raw_server: StartRaw, records: Records
) -> None:
    handle, requests = answering(
        refusal(503, "Service Unavailable", [("Retry-After", "1")]),
        refusal(429, "Too Many Requests"),
        None,
    )
    server = await raw_server(handle)
    loop = asyncio.get_running_loop()
    started = loop.time()
    reconnecting = IOWebSocketChannel.connect(server.url, reconnect_delays=quick())
    channel = await anext(aiter(reconnecting))
    assert loop.time() - started >= 1.0  # the 503's Retry-After, over the short delays
    assert len(requests) == 3
    assert channel.ready.done() and channel.ready.exception() is None
    await wait(channel.sink.close(1000))
    assert records.count("failed (attempt 1); retrying in 1.00 s") == 1
    assert records.count("failed (attempt 2); retrying in") == 1


@pytest.mark.parametrize("status", [403, 404, 400])
async def test_client_does_not_retry_other_4xx(raw_server: StartRaw, status: int) -> None:
    handle, requests = answering(refusal(status, "No"), None)
    server = await raw_server(handle)
    with pytest.raises(InvalidStatus) as caught:
        async for _ in wschannel.connect(server.url, reconnect_delays=quick()):
            raise AssertionError("no channel should open")
    assert caught.value.status == status
    assert len(requests) == 1


async def test_client_raises_the_last_error_when_the_delays_run_out(
    raw_server: StartRaw, records: Records
) -> None:
    handle, requests = answering(refusal(502, "Bad Gateway"))
    server = await raw_server(handle)
    with pytest.raises(InvalidStatus) as caught:
        async for _ in wschannel.connect(server.url, reconnect_delays=quick(2)):
            raise AssertionError("no channel should open")
    assert caught.value.status == 502
    assert len(requests) == 3  # the first attempt and one per delay
    assert records.count("failed (attempt 3), no more attempts") == 1


async def test_iteration_closes_the_channel_the_loop_comes_back_with() -> None:
    codes: list[int | None] = []

    async def record(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        codes.append(channel.close_code)

    async with wschannel.serve(record, "127.0.0.1", 0) as server:
        channels = []
        url = f"ws://127.0.0.1:{server.port}"
        async for channel in wschannel.connect(url, reconnect_delays=quick()):
            channels.append(channel)  # and come back at once: the next one replaces it
            if len(channels) == 2:
                break
        assert [channel.close_code for channel in channels] == [1000, None]
        await wait(channels[1].sink.close(3000))
        await wait_until(lambda: len(codes) == 2, what="the server saw both closes")
        assert codes == [1000, 3000]


async def test_iteration_ends_after_a_connection_when_no_delay_is_left(echo_url: str) -> None:
    channels = [
        channel async for channel in wschannel.connect(echo_url, reconnect_delays=lambda: [])
    ]
    assert len(channels) == 1
    assert channels[0].close_code == 1000


async def test_break_stops_reconnecting_and_leaves_the_channel_open(echo_url: str) -> None:
    async for channel in wschannel.connect(echo_url, reconnect_delays=quick()):  # noqa: B007
        break
    assert channel.close_code is None
    channel.sink.add("still open")
    assert await next_message(aiter(channel.stream)) == "still open"
    await wait(channel.sink.close(1000))


async def test_a_channel_not_made_by_connect_does_not_iterate(echo_url: str) -> None:
    raised: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def handler(channel: IOWebSocketChannel) -> None:
        try:
            aiter(channel)
        except TypeError as exc:
            raised.set_result(exc)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        client = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        error = await asyncio.wait_for(raised, TIMEOUT)
        assert "not made by connect()" in str(error)
        await wait(client.sink.done)


# Reconnecting (blocking).


def echo_sync(channel: wschannel.sync.SyncWebSocketChannel) -> None:
    for message in channel.stream:
        channel.sink.add(message)


def test_blocking_client_reconnects_to_a_server_restarted_on_the_same_port(
    records: Records,
) -> None:
    server = wschannel.sync.serve(echo_sync, "127.0.0.1", 0)
    port = server.port
    servers = [server]
    threads = [threading.Thread(target=server.serve_forever, daemon=True)]
    threads[0].start()
    url = f"ws://127.0.0.1:{port}"

    def restart_once_refused() -> None:
        assert records.event("failed (attempt 1)").wait(TIMEOUT)
        again = wschannel.sync.serve(echo_sync, "127.0.0.1", port)
        servers.append(again)
        thread = threading.Thread(target=again.serve_forever, daemon=True)
        threads.append(thread)
        thread.start()

    echoed: list[object] = []
    try:
        for channel in wschannel.sync.connect(url, reconnect_delays=quick()):
            channel.sink.add(f"hello {len(echoed)}")
            echoed.append(channel.receive(TIMEOUT))
            if len(echoed) == 2:
                break
            threading.Thread(target=restart_once_refused, daemon=True).start()
            stopping = threading.Thread(target=servers[0].shutdown, args=(TIMEOUT,))
            stopping.start()  # the connection closes with 1001
            for _ in channel.stream:  # until it ends (the close is answered meanwhile)
                pass
            stopping.join(TIMEOUT)
            assert channel.close_code == 1001
        with channel:  # the one the loop left open: closed with 1000
            pass
        assert channel.close_code == 1000
        assert echoed == ["hello 0", "hello 1"]
    finally:
        for running in servers:
            running.shutdown(TIMEOUT)
        for thread in threads:
            thread.join(TIMEOUT)
    assert records.count(f"Connection to {url} closed (1001); reconnecting in") == 1
    assert records.count(f"Connected to {url} after") == 1


def test_blocking_reconnect_retries_the_first_attempt_too() -> None:
    requests: list[int] = []

    def handle(sock: socket.socket) -> None:
        requests.append(1)
        if len(requests) == 1:
            sync_read_request(sock)
            sock.sendall(refusal(503, "Service Unavailable"))
            return
        sync_accept_upgrade(sock)
        sock.recv(1024)  # the client's close frame

    with sync_raw_server(handle) as server:
        channel = next(wschannel.sync.reconnect(server.url, reconnect_delays=quick()))
        assert len(requests) == 2
        assert channel.close_code is None
        channel.sink.close(1000)


def test_blocking_reconnect_raises_a_403_at_once() -> None:
    requests: list[int] = []

    def handle(sock: socket.socket) -> None:
        requests.append(1)
        sync_read_request(sock)
        sock.sendall(refusal(403, "Forbidden"))

    with sync_raw_server(handle) as server, pytest.raises(InvalidStatus):
        for _ in wschannel.sync.reconnect(server.url, reconnect_delays=quick()):
            raise AssertionError("no channel should open")
    assert len(requests) == 1


# The rules, as functions.


def test_backoff_grows_with_jitter_up_to_its_maximum() -> None:
    delays = list(itertools.islice(backoff(first=1.0, factor=2.0, maximum=8.0), 7))
    assert 0 <= delays[0] <= 1.0
    for delay, nominal in zip(delays[1:], [2.0, 4.0, 8.0, 8.0, 8.0, 8.0], strict=True):
        assert nominal / 2 <= delay <= nominal
    assert list(itertools.islice(backoff(first=0.5, jitter=0), 1, 4)) == [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    "arguments",
    [{"first": -1.0}, {"factor": 0.5}, {"first": 2.0, "maximum": 1.0}, {"jitter": 2.0}],
)
def test_backoff_refuses_arguments_that_make_no_series(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        backoff(**arguments)


def status_error(status: int, *headers: tuple[str, str]) -> InvalidStatus:
    return InvalidStatus(f"status {status}", status, list(headers))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (status_error(503), True),
        (status_error(500), True),
        (status_error(429), True),
        (status_error(403), False),
        (status_error(404), False),
        (TimeoutError("connect timed out"), True),
        (WebSocketChannelException.from_inner(ConnectionRefusedError(111, "refused")), True),
        (WebSocketChannelException.from_inner(socket.gaierror(-2, "unknown name")), True),
        (WebSocketChannelException.from_inner(ssl.SSLCertVerificationError("bad cert")), False),
        (WebSocketChannelException("The server chose the subprotocol 'x'"), False),
        (ProxyError("refused", proxy="http://proxy:3128", status=407), False),
        (ProxyError("bad gateway", proxy="http://proxy:3128", status=502), True),
        (ProxyError("refused", proxy="socks5://proxy:1080", reply=0x05), True),
        (ProxyError("not allowed", proxy="socks5://proxy:1080", reply=0x02), False),
        (ValueError("bad URL"), False),
    ],
)
def test_what_is_retried(error: Exception, expected: bool) -> None:
    assert retryable(error) is expected


def test_retry_after_in_seconds_or_as_a_date_and_bounded() -> None:
    now = 1_700_000_000.0
    in_90_s = email.utils.formatdate(now + 90, usegmt=True)
    assert retry_after(status_error(503, ("Retry-After", "7"))) == 7.0
    assert retry_after(status_error(503, ("retry-after", in_90_s)), now) == pytest.approx(90.0)
    assert retry_after(status_error(503, ("Retry-After", "99999999999999"))) == MAX_RETRY_AFTER
    passed = email.utils.formatdate(now - 90, usegmt=True)
    assert retry_after(status_error(503, ("Retry-After", passed)), now) == 0.0
    assert retry_after(status_error(503, ("Retry-After", "soon"))) is None
    assert retry_after(status_error(503)) is None
    assert retry_after(TimeoutError()) is None


async def test_reconnect_delays_that_are_not_a_function_raise_at_the_call(echo_url: str) -> None:
    with pytest.raises(TypeError, match=r"reconnect_delays must be a function .* got \[1, 2\]"):
        wschannel.connect(echo_url, reconnect_delays=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reconnect_delays must be a function"):
        wschannel.sync.connect(echo_url, reconnect_delays=[1, 2])  # type: ignore[arg-type]


async def test_a_negative_delay_raises_when_it_comes(raw_server: StartRaw) -> None:
    handle, _ = answering(refusal(503, "Service Unavailable"))
    server = await raw_server(handle)
    with pytest.raises(ValueError, match="delays are seconds"):
        async for _ in wschannel.connect(server.url, reconnect_delays=lambda: [-1.0]):
            raise AssertionError("no channel should open")


# should_retry: the rule deciding which failed attempts are tried again.


async def test_should_retry_decides_which_errors_are_retried(raw_server: StartRaw) -> None:
    # A 404, which retryable() would raise, is tried again because the rule says so...
    handle, requests = answering(refusal(404, "Not Found"), None)
    server = await raw_server(handle)
    seen: list[Exception] = []

    def rule(error: Exception) -> bool:
        seen.append(error)
        return isinstance(error, InvalidStatus) and error.status == 404

    reconnecting = IOWebSocketChannel.connect(
        server.url, reconnect_delays=quick(), should_retry=rule
    )
    channel = await anext(aiter(reconnecting))
    assert len(requests) == 2
    assert [getattr(error, "status", None) for error in seen] == [404]
    await wait(channel.sink.close(1000))
    # ... and a 503, which it would retry, raised at once when the rule says no.
    handle, requests = answering(refusal(503, "Service Unavailable"), None)
    server = await raw_server(handle)
    with pytest.raises(InvalidStatus) as caught:
        async for _ in wschannel.connect(
            server.url, reconnect_delays=quick(), should_retry=lambda error: False
        ):
            raise AssertionError("no channel should open")
    assert caught.value.status == 503
    assert len(requests) == 1


def test_blocking_should_retry_decides_which_errors_are_retried() -> None:
    requests: list[int] = []

    def handle(sock: socket.socket) -> None:
        requests.append(1)
        if len(requests) == 1:
            sync_read_request(sock)
            sock.sendall(refusal(404, "Not Found"))
            return
        sync_accept_upgrade(sock)
        sock.recv(1024)  # the client's close frame

    def rule(error: Exception) -> bool:
        return isinstance(error, InvalidStatus) and error.status == 404

    with sync_raw_server(handle) as server:
        reconnecting = wschannel.sync.reconnect(
            server.url, reconnect_delays=quick(), should_retry=rule
        )
        channel = next(reconnecting)
        assert len(requests) == 2
        channel.sink.close(1000)
        requests.clear()
        with pytest.raises(InvalidStatus):
            for _ in wschannel.sync.reconnect(
                server.url, reconnect_delays=quick(), should_retry=lambda error: False
            ):
                raise AssertionError("no channel should open")
        assert len(requests) == 1


async def test_should_retry_that_is_not_a_function_raises_at_the_call(echo_url: str) -> None:
    with pytest.raises(TypeError, match=r"should_retry must be a function .* got 5"):
        wschannel.connect(echo_url, should_retry=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="should_retry must be a function"):
        wschannel.sync.connect(echo_url, should_retry=True)  # type: ignore[arg-type]


def test_retryable_is_the_default_rule_and_public() -> None:
    assert wschannel.retryable is retryable
    assert "retryable" in wschannel.__all__
