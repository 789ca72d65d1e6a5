"""Redirects of the opening handshake, against real servers on 127.0.0.1: small HTTP servers
written here that answer the upgrade with 3xx and a Location, chained to a real wschannel
echo server that records each request it accepted (path and headers). Every client: asyncio,
blocking, trio and anyio (tests/structured_clients.py). The rules themselves are in
wschannel/_redirect.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structured_clients
import trustme
from conftest import TIMEOUT
from sync_helpers import AsyncioServer

import wschannel.sync
from wschannel import WebSocketChannelException
from wschannel._redirect import Redirects
from wschannel.defaults import DEFAULT_MAX_REDIRECTS
from wschannel.exceptions import InvalidStatus
from wschannel.io import IOWebSocketChannel

FLAVOURS = ["asyncio", "blocking", "trio", "anyio"]


# The peers.


class EchoServer:
    """A wschannel echo server (ws://, or wss:// with ``context``) in a thread's event loop,
    recording each accepted request's path and headers."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.server = AsyncioServer(self._echo, ssl=context)
        self.scheme = "ws" if context is None else "wss"

    async def _echo(self, channel: IOWebSocketChannel) -> None:
        request = channel.request
        assert request is not None
        self.requests.append((request.path, {k.lower(): v for k, v in request.headers}))
        async for message in channel.stream:
            channel.sink.add(message)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.server.server.port}{path}"

    def stop(self) -> None:
        self.server.stop()


class Redirector:
    """An HTTP server on 127.0.0.1 (TLS with ``context``) answering every request with
    ``answer(path)``'s status and Location (``None``: no Location header), in a thread;
    records the requests' paths and headers."""

    def __init__(
        self,
        answer: Callable[[str], tuple[int, str | None]],
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.answer = answer
        self.context = context
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.scheme = "ws" if context is None else "wss"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str = "/", host: str = "127.0.0.1", userinfo: str = "") -> str:
        return f"{self.scheme}://{userinfo}{host}:{self.port}{path}"

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # stopped
            # A client may give up (a refused TLS handshake...).
            with sock, contextlib.suppress(OSError, ssl.SSLError):
                self._answer(sock)

    def _answer(self, sock: socket.socket) -> None:
        sock.settimeout(TIMEOUT)
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True)
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                return
            head += data
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        self.requests.append((path, headers))
        status, location = self.answer(path)
        response = f"HTTP/1.1 {status} Redirect\r\nContent-Length: 5\r\nConnection: close\r\n"
        if location is not None:
            response += f"Location: {location}\r\n"
        sock.sendall((response + "\r\nmoved").encode())

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        self.listener.close()
        self._thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def forget_requests(echo: EchoServer) -> None:
    echo.requests.clear()


@pytest.fixture
def redirector() -> Iterator[Callable[..., Redirector]]:
    started: list[Redirector] = []

    def start(
        answer: Callable[[str], tuple[int, str | None]], context: ssl.SSLContext | None = None
    ) -> Redirector:
        server = Redirector(answer, context)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls(authority: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context (127.0.0.1, localhost) and a client context that trusts it."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return server, client


def echo_through(flavour: str, url: str, message: str = "hello", **options: Any) -> object:
    """Connect to ``url`` with ``options`` (redirects and all), send ``message``; the echo."""
    options.setdefault("proxy", None)
    if flavour in structured_clients.STRUCTURED:
        return structured_clients.echo_through(flavour, url, message, **options)
    if flavour == "asyncio":

        async def run() -> object:
            channel = IOWebSocketChannel.connect(url, **options)
            await asyncio.wait_for(channel.ready, TIMEOUT)
            channel.sink.add(message)
            reply = await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT)
            await asyncio.wait_for(channel.sink.close(), TIMEOUT)
            return reply

        return asyncio.run(run())
    with wschannel.sync.connect(url, **options) as channel:
        channel.sink.add(message)
        return channel.receive(TIMEOUT)


def connect_error(flavour: str, url: str, **options: Any) -> BaseException:
    options.setdefault("proxy", None)
    options.setdefault("connect_timeout", TIMEOUT)
    if flavour in structured_clients.STRUCTURED:
        return structured_clients.connect_error(flavour, url, **options)
    if flavour == "asyncio":

        async def run() -> BaseException:
            channel = IOWebSocketChannel.connect(url, **options)
            try:
                await asyncio.wait_for(channel.ready, 2 * TIMEOUT)
            except Exception as exc:
                return exc
            await channel.sink.close()
            raise AssertionError(f"connected to {url}")

        return asyncio.run(run())
    try:
        wschannel.sync.connect(url, **options).close()
    except Exception as exc:
        return exc
    raise AssertionError(f"connected to {url}")


# Following.


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_follows_a_redirect(
    flavour: str, status: int, echo: EchoServer, redirector: Callable[..., Redirector]
) -> None:
    server = redirector(lambda path: (status, echo.url("/chat?room=1")))
    assert echo_through(flavour, server.url("/old")) == "hello"
    assert [path for path, _ in server.requests] == ["/old"]
    assert [path for path, _ in echo.requests] == ["/chat?room=1"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_resolves_a_relative_location(
    flavour: str, echo: EchoServer, redirector: Callable[..., Redirector]
) -> None:
    # ../c?x=1 against ws://127.0.0.1:P/a/b is ws://127.0.0.1:P/c?x=1: this server again,
    # which then sends the client on to the echo server.
    second = redirector(lambda path: (307, "../c?x=1") if path == "/a/b" else (308, echo.url(path)))
    assert echo_through(flavour, second.url("/a/b")) == "hello"
    assert [path for path, _ in second.requests] == ["/a/b", "/c?x=1"]
    assert [path for path, _ in echo.requests] == ["/c?x=1"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reads_an_http_location_as_ws(
    flavour: str, echo: EchoServer, redirector: Callable[..., Redirector]
) -> None:
    location = echo.url("/from-http").replace("ws://", "http://")
    server = redirector(lambda path: (302, location))
    assert echo_through(flavour, server.url()) == "hello"
    assert [path for path, _ in echo.requests] == ["/from-http"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_follows_up_to_max_redirects(
    flavour: str, echo: EchoServer, redirector: Callable[..., Redirector]
) -> None:
    # /1 -> /2 -> /3 -> the echo server: three redirects.
    def answer(path: str) -> tuple[int, str | None]:
        step = int(path.strip("/"))
        return (302, f"/{step + 1}") if step < 3 else (302, echo.url("/end"))

    server = redirector(answer)
    assert echo_through(flavour, server.url("/1"), max_redirects=3) == "hello"
    error = connect_error(flavour, server.url("/1"), max_redirects=2)
    assert isinstance(error, WebSocketChannelException)
    chain = " -> ".join(server.url(f"/{step}") for step in (1, 2, 3)) + f" -> {echo.url('/end')}"
    assert f"More than 2 redirects (max_redirects): {chain}." in str(error)
    assert str(error).startswith(f"Could not connect to {server.url('/1')} (redirected to ")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_with_max_redirects_0_reports_the_redirect(
    flavour: str, echo: EchoServer, redirector: Callable[..., Redirector]
) -> None:
    server = redirector(lambda path: (301, echo.url()))
    error = connect_error(flavour, server.url(), max_redirects=0)
    assert isinstance(error, InvalidStatus)
    assert error.status == 301
    assert error.header("Location") == echo.url()
    assert echo.requests == []


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_ends_a_redirect_loop_naming_it(
    flavour: str, redirector: Callable[..., Redirector]
) -> None:
    first = redirector(lambda path: (302, "/b") if path == "/a" else (302, "/a"))
    error = connect_error(flavour, first.url("/a"))
    assert isinstance(error, WebSocketChannelException)
    assert f"Redirect loop: {first.url('/a')} -> {first.url('/b')} -> {first.url('/a')}." in str(
        error
    )
    assert len(first.requests) == 2


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reports_a_redirect_without_location(
    flavour: str, redirector: Callable[..., Redirector]
) -> None:
    server = redirector(lambda path: (302, None))
    error = connect_error(flavour, server.url("/x"))
    assert isinstance(error, WebSocketChannelException)
    assert f"{server.url('/x')} answered 302 without a Location" in str(error)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_refuses_a_redirect_from_wss_to_ws(
    flavour: str,
    echo: EchoServer,
    redirector: Callable[..., Redirector],
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls
    server = redirector(lambda path: (301, echo.url("/plain")), server_context)
    error = connect_error(flavour, server.url("/secure"), ssl=client_context)
    assert isinstance(error, WebSocketChannelException)
    assert (
        f"Refused the redirect from {server.url('/secure')} to {echo.url('/plain')}: it gives "
        "up TLS (wss:// to ws://)." in str(error)
    )
    assert echo.requests == []


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_follows_a_redirect_from_ws_to_wss(
    flavour: str,
    redirector: Callable[..., Redirector],
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, _ = tls
    secure = EchoServer(server_context)
    try:
        server = redirector(lambda path: (308, secure.url("/secure")))
        # The wss:// hop verifies the server with the default CA store, which does not
        # trust the test's authority (an SSLContext is for wss:// URLs only)...
        error = connect_error(flavour, server.url())
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
        assert secure.requests == []
        # ... unless verification is off.
        assert echo_through(flavour, server.url(), ssl=False) == "hello"
        assert [path for path, _ in secure.requests] == ["/secure"]
    finally:
        secure.stop()


# Credentials and cookies stay with their origin.


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_sends_credentials_to_a_same_origin_redirect(
    flavour: str, redirector: Callable[..., Redirector]
) -> None:
    server = redirector(lambda path: (302, "/next") if path == "/first" else (403, None))
    error = connect_error(
        flavour, server.url("/first", userinfo="me:secret@"), headers={"Cookie": "session=1"}
    )
    assert isinstance(error, InvalidStatus) and error.status == 403
    (_, first), (_, second) = server.requests
    assert first["authorization"] == second["authorization"] == "Basic bWU6c2VjcmV0"
    assert first["cookie"] == second["cookie"] == "session=1"


@pytest.mark.parametrize(
    ("userinfo", "authorization"),
    [("me:secret@", "Basic bWU6c2VjcmV0"), ("", "Bearer token")],
    ids=["url-credentials", "authorization-header"],
)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_keeps_credentials_from_another_origin(
    flavour: str,
    userinfo: str,
    authorization: str,
    echo: EchoServer,
    redirector: Callable[..., Redirector],
) -> None:
    # 127.0.0.1 and localhost are two origins, though the same server.
    server = redirector(lambda path: (302, echo.url("/elsewhere", host="localhost")))
    sent = [("Cookie", "session=1"), ("X-Kept", "1")]
    if not userinfo:
        sent.append(("Authorization", authorization))
    reply = echo_through(flavour, server.url("/first", userinfo=userinfo), headers=sent)
    assert reply == "hello"
    [(_, first)] = server.requests
    assert first["authorization"] == authorization
    assert first["cookie"] == "session=1"
    [(path, headers)] = echo.requests
    assert path == "/elsewhere"
    assert "authorization" not in headers
    assert "cookie" not in headers
    assert headers["x-kept"] == "1"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_logs_each_redirect_hop(
    flavour: str,
    echo: EchoServer,
    redirector: Callable[..., Redirector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # /1 -> /2 (307) -> the echo server (308), credentials in the URL left out of the log.
    server = redirector(lambda path: (307, "/2") if path == "/1" else (308, echo.url("/end")))
    with caplog.at_level(logging.INFO, logger="wschannel.client"):
        assert echo_through(flavour, server.url("/1", userinfo="me:secret@")) == "hello"
    hops = [
        record
        for record in caplog.records
        if record.name == "wschannel.client" and record.getMessage().startswith("Redirected")
    ]
    assert [record.getMessage() for record in hops] == [
        f"Redirected from {server.url('/1')} to {server.url('/2')} (307, redirect 1 of at most "
        f"{DEFAULT_MAX_REDIRECTS})",
        f"Redirected from {server.url('/2')} to {echo.url('/end')} (308, redirect 2 of at most "
        f"{DEFAULT_MAX_REDIRECTS})",
    ]
    assert {record.levelno for record in hops} == {logging.INFO}
    assert "secret" not in caplog.text


def test_redirects_reject_a_bad_max_redirects() -> None:
    with pytest.raises(ValueError, match="max_redirects must be 0 or more"):
        Redirects("ws://example.com/", -1)
    with pytest.raises(TypeError, match="max_redirects must be an int"):
        Redirects("ws://example.com/", True)


def test_redirects_refuse_a_location_that_is_not_websocket() -> None:
    redirects = Redirects("ws://example.com/", 5)
    with pytest.raises(WebSocketChannelException, match="not a ws://, wss://, http:// or https://"):
        redirects.follow(301, "ftp://example.com/file")
    assert redirects.follow(404, "ws://example.com/other") is None
