"""Clients through real proxies started by the tests on loopback (tests/proxy/servers.py):
Debian's tinyproxy (HTTP CONNECT, Basic credentials, CONNECT ports), dante-server's danted
(SOCKS5 and SOCKS5h, with and without RFC 1929 credentials, its rules), and tinyproxy
behind a TLS terminator (an https:// proxy). Each case runs with the asyncio client, the
blocking one, and the trio and anyio ones (tests/structured_clients.py), to ws:// and wss://
echo servers; a proxy's own log shows the tunnel went through it. The tunnels' parsers alone
(wschannel._proxy, no I/O) are tested at the end against answers no real proxy sends.

tests/proxy/setup.sh installs the proxies; without them the cases skip, saying so.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import structured_clients
import trustme
from conftest import TIMEOUT
from proxy import servers
from proxy.servers import ProxyProcess, TlsTerminator
from sync_helpers import AsyncioServer

import wschannel.sync
from wschannel._proxy import (
    HttpConnect,
    Proxy,
    Socks5,
    environment_proxy,
    open_tunnel,
    select_proxy,
)
from wschannel.exceptions import ProxyError
from wschannel.io import IOWebSocketChannel

FLAVOURS = ["asyncio", "blocking", "trio", "anyio"]
WITH_UVLOOP = ["asyncio", "uvloop", "blocking", "trio", "anyio"]
"""For the cases that open a connection through each kind of proxy: uvloop's transports too
(``set_protocol``, ``start_tls`` over TLS)."""

PROXY_VARIABLES = [
    f"{scheme}_proxy" for scheme in ("http", "https", "ws", "wss", "all", "no", "socks")
]


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no proxy variable set (any case), as a developer's shell may."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


# The peers: echo servers (ws and wss), the proxies.


async def _echo(channel: IOWebSocketChannel) -> None:
    async for message in channel.stream:
        channel.sink.add(message)


class Targets:
    """A ws:// and a wss:// echo server on 127.0.0.1 (the certificate names 127.0.0.1 and
    localhost), and the client TLS context that trusts it and the https proxy."""

    def __init__(self, authority: trustme.CA) -> None:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
        self.client_ssl = ssl.create_default_context()
        authority.configure_trust(self.client_ssl)
        self.plain = AsyncioServer(_echo)
        self.secure = AsyncioServer(_echo, ssl=server_context)

    def url(self, scheme: str, host: str = "127.0.0.1") -> str:
        server = self.plain if scheme == "ws" else self.secure
        return f"{scheme}://{host}:{server.server.port}/"

    def port(self, scheme: str) -> int:
        server = self.plain if scheme == "ws" else self.secure
        return int(server.server.port)

    def options(self, scheme: str) -> dict[str, Any]:
        return {"ssl": self.client_ssl} if scheme == "wss" else {}

    def stop(self) -> None:
        self.plain.stop()
        self.secure.stop()


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def targets(authority: trustme.CA) -> Iterator[Targets]:
    targets = Targets(authority)
    yield targets
    targets.stop()


def _skip_unless(reason: str | None) -> None:
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def http_proxy() -> Iterator[ProxyProcess]:
    _skip_unless(servers.missing("tinyproxy", "tinyproxy"))
    with servers.tinyproxy() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def http_proxy_with_credentials() -> Iterator[ProxyProcess]:
    _skip_unless(servers.missing("tinyproxy", "tinyproxy"))
    with servers.tinyproxy(credentials=True) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def https_proxy(authority: trustme.CA) -> Iterator[TlsTerminator]:
    _skip_unless(servers.missing("tinyproxy", "tinyproxy"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    with servers.tinyproxy(credentials=True) as proxy:
        terminator = TlsTerminator(proxy.port, context)
        try:
            yield terminator
        finally:
            terminator.stop()


@pytest.fixture(scope="module")
def socks_proxy() -> Iterator[ProxyProcess]:
    _skip_unless(servers.missing("danted", "dante-server"))
    with servers.danted(debug=True) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def socks_proxy_with_credentials() -> Iterator[ProxyProcess]:
    _skip_unless(servers.missing("danted", "dante-server") or servers.socks_user_missing())
    with servers.danted(method="username") as proxy:
        yield proxy


# Talking through them, with either client.


def echo_through(flavour: str, url: str, message: str = "hello", **options: Any) -> object:
    """Connect to the echo server at ``url`` with ``options``, send ``message``; the echo."""
    if flavour in structured_clients.STRUCTURED:
        return structured_clients.echo_through(flavour, url, message, **options)
    if flavour in ("asyncio", "uvloop"):

        async def run() -> object:
            channel = IOWebSocketChannel.connect(url, **options)
            await asyncio.wait_for(channel.ready, TIMEOUT)
            channel.sink.add(message)
            reply = await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT)
            await asyncio.wait_for(channel.sink.close(), TIMEOUT)
            return reply

        if flavour == "uvloop":
            uvloop = pytest.importorskip("uvloop")
            return uvloop.run(run())
        return asyncio.run(run())
    with wschannel.sync.connect(url, **options) as channel:
        channel.sink.add(message)
        return channel.receive(TIMEOUT)


def connect_error(flavour: str, url: str, **options: Any) -> BaseException:
    """The error connecting to ``url`` with ``options`` raised (or failed ``ready`` with)."""
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


def tunnels_to(proxy: ProxyProcess, port: int) -> int:
    """How many CONNECTs to 127.0.0.1:``port`` tinyproxy's log shows."""
    return proxy.log().count(f"CONNECT 127.0.0.1:{port} ")


def socks_requests(proxy: ProxyProcess, address: str, port: int) -> int:
    """How many SOCKS5 requests for ``address`` (as sent: a name or an IP) danted's debug
    log shows."""
    return proxy.log().count(f"address: {address}.{port} ")


# HTTP CONNECT: tinyproxy.


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("flavour", WITH_UVLOOP)
def test_client_connects_through_an_http_proxy(
    flavour: str, scheme: str, targets: Targets, http_proxy: ProxyProcess
) -> None:
    before = tunnels_to(http_proxy, targets.port(scheme))
    reply = echo_through(
        flavour, targets.url(scheme), proxy=http_proxy.url(), **targets.options(scheme)
    )
    assert reply == "hello"
    assert tunnels_to(http_proxy, targets.port(scheme)) == before + 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_sends_the_proxy_urls_credentials(
    flavour: str, targets: Targets, http_proxy_with_credentials: ProxyProcess
) -> None:
    proxy = http_proxy_with_credentials.url(servers.HTTP_USER, servers.HTTP_PASSWORD)
    assert echo_through(flavour, targets.url("ws"), proxy=proxy) == "hello"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reports_407_without_credentials(
    flavour: str, targets: Targets, http_proxy_with_credentials: ProxyProcess
) -> None:
    proxy = http_proxy_with_credentials.url()
    error = connect_error(flavour, targets.url("ws"), proxy=proxy)
    assert isinstance(error, ProxyError)
    assert error.status == 407
    assert error.proxy == proxy
    message = str(error)
    assert message.startswith(f"Could not connect to {targets.url('ws')}: ")
    assert f"proxy {proxy} refused the tunnel to 127.0.0.1:" in message
    assert "407 Proxy Authentication Required" in message
    assert "give credentials in the proxy URL" in message


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reports_wrong_credentials(
    flavour: str, targets: Targets, http_proxy_with_credentials: ProxyProcess
) -> None:
    proxy = http_proxy_with_credentials.url(servers.HTTP_USER, "wrong")
    error = connect_error(flavour, targets.url("ws"), proxy=proxy)
    assert isinstance(error, ProxyError)
    # tinyproxy answers wrong credentials with 401, missing ones with 407.
    assert error.status in (401, 407)
    assert "check the user and password in the proxy URL" in str(error)
    assert "wrong" not in str(error)  # no password in messages
    assert error.proxy == http_proxy_with_credentials.url()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reports_a_tunnel_the_proxys_rules_refuse(flavour: str, targets: Targets) -> None:
    _skip_unless(servers.missing("tinyproxy", "tinyproxy"))
    with servers.tinyproxy(connect_ports=[443]) as proxy:
        error = connect_error(flavour, targets.url("ws"), proxy=proxy.url())
    assert isinstance(error, ProxyError)
    assert error.status == 403
    assert f"refused the tunnel to 127.0.0.1:{targets.port('ws')}: 403" in str(error)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reports_a_proxy_that_is_not_listening(flavour: str, targets: Targets) -> None:
    proxy = f"http://127.0.0.1:{servers.free_port()}"
    error = connect_error(flavour, targets.url("ws"), proxy=proxy)
    assert isinstance(error, ProxyError)
    assert error.status is None
    assert f"could not reach proxy {proxy}: " in str(error)
    assert str(error).startswith(f"Could not connect to {targets.url('ws')}: ")
    assert isinstance(error.__cause__, ConnectionRefusedError)


# HTTPS proxies: TLS to the proxy, then TLS to a wss:// target inside it.


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("flavour", WITH_UVLOOP)
def test_client_connects_through_an_https_proxy(
    flavour: str, scheme: str, targets: Targets, https_proxy: TlsTerminator
) -> None:
    before = https_proxy.connections
    reply = echo_through(
        flavour,
        targets.url(scheme),
        proxy=https_proxy.url(servers.HTTP_USER, servers.HTTP_PASSWORD),
        proxy_ssl=targets.client_ssl,
        **targets.options(scheme),
    )
    assert reply == "hello"
    assert https_proxy.connections == before + 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_verifies_an_https_proxys_certificate(
    flavour: str, targets: Targets, https_proxy: TlsTerminator
) -> None:
    # Without proxy_ssl, the default CA store does not trust the test's authority.
    error = connect_error(flavour, targets.url("ws"), proxy=https_proxy.url())
    assert isinstance(error, ProxyError)
    assert f"could not reach proxy {https_proxy.url()}: " in str(error)
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reports_407_from_an_https_proxy(
    flavour: str, targets: Targets, https_proxy: TlsTerminator
) -> None:
    error = connect_error(
        flavour, targets.url("wss"), proxy=https_proxy.url(), proxy_ssl=targets.client_ssl
    )
    assert isinstance(error, ProxyError)
    assert error.status == 407


# SOCKS5: danted.


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("flavour", WITH_UVLOOP)
def test_client_connects_through_a_socks5_proxy_resolving_the_name_itself(
    flavour: str, scheme: str, targets: Targets, socks_proxy: ProxyProcess
) -> None:
    port = targets.port(scheme)
    before = socks_requests(socks_proxy, "127.0.0.1", port)
    reply = echo_through(
        flavour,
        targets.url(scheme, "localhost"),
        proxy=socks_proxy.url(scheme="socks5"),
        **targets.options(scheme),
    )
    assert reply == "hello"
    # socks5:// sends the address the client resolved, not the name.
    assert socks_requests(socks_proxy, "127.0.0.1", port) == before + 1


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("flavour", WITH_UVLOOP)
def test_client_connects_through_a_socks5h_proxy_sending_the_name(
    flavour: str, scheme: str, targets: Targets, socks_proxy: ProxyProcess
) -> None:
    port = targets.port(scheme)
    before = socks_requests(socks_proxy, "localhost", port)
    reply = echo_through(
        flavour,
        targets.url(scheme, "localhost"),
        proxy=socks_proxy.url(scheme="socks5h"),
        **targets.options(scheme),
    )
    assert reply == "hello"
    assert socks_requests(socks_proxy, "localhost", port) == before + 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reports_a_connection_the_socks_proxys_rules_refuse(
    flavour: str, targets: Targets
) -> None:
    _skip_unless(servers.missing("danted", "dante-server"))
    with servers.danted(blocked_port=targets.port("ws")) as proxy:
        error = connect_error(flavour, targets.url("ws"), proxy=proxy.url())
    assert isinstance(error, ProxyError)
    assert error.reply == 0x02
    assert (
        f"refused the connection to 127.0.0.1:{targets.port('ws')}: "
        "connection not allowed by ruleset (reply 0x02)" in str(error)
    )


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_authenticates_to_a_socks5_proxy(
    flavour: str, scheme: str, targets: Targets, socks_proxy_with_credentials: ProxyProcess
) -> None:
    proxy = socks_proxy_with_credentials.url(servers.SOCKS_USER, servers.SOCKS_PASSWORD, "socks5h")
    reply = echo_through(flavour, targets.url(scheme), proxy=proxy, **targets.options(scheme))
    assert reply == "hello"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reports_wrong_socks5_credentials(
    flavour: str, targets: Targets, socks_proxy_with_credentials: ProxyProcess
) -> None:
    proxy = socks_proxy_with_credentials.url(servers.SOCKS_USER, "wrong")
    error = connect_error(flavour, targets.url("ws"), proxy=proxy)
    assert isinstance(error, ProxyError)
    assert "refused the user name and password" in str(error)
    assert "wrong" not in str(error)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reports_missing_socks5_credentials(
    flavour: str, targets: Targets, socks_proxy_with_credentials: ProxyProcess
) -> None:
    error = connect_error(flavour, targets.url("ws"), proxy=socks_proxy_with_credentials.url())
    assert isinstance(error, ProxyError)
    assert "accepts none of the authentication methods offered (none)" in str(error)
    assert "socks5://user:password@host:port" in str(error)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_reports_a_socks_proxy_that_is_not_listening(flavour: str, targets: Targets) -> None:
    proxy = f"socks5h://127.0.0.1:{servers.free_port()}"
    error = connect_error(flavour, targets.url("ws"), proxy=proxy)
    assert isinstance(error, ProxyError)
    assert f"could not reach proxy {proxy}" in str(error)


# The environment's proxies.


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_takes_the_proxy_from_the_environment(
    flavour: str, targets: Targets, http_proxy: ProxyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", http_proxy.url())
    before = tunnels_to(http_proxy, targets.port("ws"))
    assert echo_through(flavour, targets.url("ws")) == "hello"
    assert tunnels_to(http_proxy, targets.port("ws")) == before + 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_takes_https_proxy_for_wss(
    flavour: str, targets: Targets, http_proxy: ProxyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("https_proxy", http_proxy.url())
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{servers.free_port()}")  # not for wss
    before = tunnels_to(http_proxy, targets.port("wss"))
    assert echo_through(flavour, targets.url("wss"), ssl=targets.client_ssl) == "hello"
    assert tunnels_to(http_proxy, targets.port("wss")) == before + 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_takes_all_proxy_from_the_environment(
    flavour: str, targets: Targets, socks_proxy: ProxyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALL_PROXY", socks_proxy.url(scheme="socks5h"))
    port = targets.port("ws")
    before = socks_requests(socks_proxy, "localhost", port)
    assert echo_through(flavour, targets.url("ws", "localhost")) == "hello"
    assert socks_requests(socks_proxy, "localhost", port) == before + 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_goes_direct_to_hosts_in_no_proxy(
    flavour: str, targets: Targets, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{servers.free_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("ALL_PROXY", dead)
    # The dead proxy is used, and fails, until NO_PROXY names the host.
    assert isinstance(connect_error(flavour, targets.url("ws")), ProxyError)
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    assert echo_through(flavour, targets.url("ws")) == "hello"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_with_proxy_none_ignores_the_environment(
    flavour: str, targets: Targets, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{servers.free_port()}")
    assert echo_through(flavour, targets.url("ws"), proxy=None) == "hello"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_explicit_proxy_overrides_the_environment(
    flavour: str, targets: Targets, http_proxy: ProxyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{servers.free_port()}")
    assert echo_through(flavour, targets.url("ws"), proxy=http_proxy.url()) == "hello"


def test_environment_proxy_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert environment_proxy("example.com", 80, secure=False) is None
    monkeypatch.setenv("all_proxy", "socks5h://all:1080")
    assert environment_proxy("example.com", 80, secure=False) == "socks5h://all:1080"
    monkeypatch.setenv("http_proxy", "http://plain:3128")
    assert environment_proxy("example.com", 80, secure=False) == "http://plain:3128"
    assert environment_proxy("example.com", 443, secure=True) == "socks5h://all:1080"
    monkeypatch.setenv("https_proxy", "secure:3129")  # no scheme: http://, as curl reads it
    assert environment_proxy("example.com", 80, secure=False) == "http://secure:3129"
    assert environment_proxy("example.com", 443, secure=True) == "http://secure:3129"
    monkeypatch.setenv("ws_proxy", "http://ws:1")
    monkeypatch.setenv("wss_proxy", "http://wss:2")
    assert environment_proxy("example.com", 80, secure=False) == "http://ws:1"
    assert environment_proxy("example.com", 443, secure=True) == "http://wss:2"
    monkeypatch.setenv("no_proxy", ".example.com")
    assert environment_proxy("chat.example.com", 443, secure=True) is None
    assert environment_proxy("example.org", 443, secure=True) == "http://wss:2"


def test_environment_proxy_prefers_lower_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://upper:1")
    monkeypatch.setenv("http_proxy", "http://lower:2")
    assert environment_proxy("example.com", 80, secure=False) == "http://lower:2"
    assert urllib.request.getproxies()["http"] == "http://lower:2"  # as urllib does


# Misuse raises at the call.


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_rejects_an_unsupported_proxy_at_the_call(flavour: str) -> None:
    connect = _connect_call(flavour)
    with pytest.raises(ValueError, match=r"Unsupported proxy 'ftp://proxy:21'.*socks5h://"):
        connect("ws://example.com/", proxy="ftp://proxy:21")
    with pytest.raises(ValueError, match="socks4 is not supported"):
        connect("ws://example.com/", proxy="socks4://proxy:1080")
    with pytest.raises(ValueError, match="has no host"):
        connect("ws://example.com/", proxy="http://:8080")
    with pytest.raises(TypeError, match="use proxy=None to connect directly"):
        connect("ws://example.com/", proxy=False)
    with pytest.raises(TypeError, match="proxy must be a proxy URL"):
        connect("ws://example.com/", proxy=8080)
    with pytest.raises(TypeError, match=r"proxy_ssl must be an ssl\.SSLContext"):
        connect("ws://example.com/", proxy="https://proxy:443", proxy_ssl=True)


@pytest.mark.parametrize("flavour", ["asyncio", *structured_clients.STRUCTURED])
def test_client_rejects_a_proxy_with_a_unix_socket(flavour: str) -> None:
    connect = _connect_call(flavour)
    with pytest.raises(ValueError, match="proxy= and unix_socket= cannot be used together"):
        connect("ws://localhost/", proxy="http://127.0.0.1:3128", unix_socket="/tmp/x.sock")


def test_client_rejects_an_unusable_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("http_proxy", "gopher://old:70")
    with pytest.raises(ValueError, match=r"It came from the environment's \*_proxy variables"):
        select_proxy(True, "example.com", 80, secure=False)


def _connect_call(flavour: str) -> Any:
    if flavour == "blocking":
        return wschannel.sync.connect
    if flavour in structured_clients.STRUCTURED:
        return structured_clients.connect_call(flavour)

    def connect(url: str, **options: Any) -> None:
        async def run() -> None:
            IOWebSocketChannel.connect(url, **options)

        asyncio.run(run())

    return connect


# The tunnels' parsers, without I/O: what no real proxy here answers.


def _http_tunnel(max_size: int = 16384) -> HttpConnect:
    proxy = Proxy.parse("http://user:pa%20ss@proxy.example:3128")
    return HttpConnect(proxy, "example.com", 443, user_agent="test", max_size=max_size)


def test_http_connect_request_carries_the_authority_and_basic_credentials() -> None:
    tunnel = _http_tunnel()
    request = tunnel.data_to_send()
    assert request == (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: test\r\n"
        b"Proxy-Authorization: Basic dXNlcjpwYSBzcw==\r\n\r\n"
    )
    assert tunnel.receive_data(b"HTTP/1.1 200 Connection established\r\n") is False
    assert tunnel.receive_data(b"Proxy-Agent: x\r\n\r\n") is True
    assert tunnel.status == 200


def test_http_connect_bounds_the_answers_head() -> None:
    tunnel = _http_tunnel(max_size=64)
    tunnel.data_to_send()
    tunnel.receive_data(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ProxyError, match="a head over 64 bytes"):
        tunnel.receive_data(b"X-Padding: " + b"x" * 100)


def test_http_connect_rejects_an_answer_that_is_not_http() -> None:
    tunnel = _http_tunnel()
    with pytest.raises(ProxyError, match="invalid HTTP response"):
        tunnel.receive_data(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_http_connect_rejects_bytes_after_the_answer() -> None:
    tunnel = _http_tunnel()
    with pytest.raises(ProxyError, match="sent 5 bytes after its answer"):
        tunnel.receive_data(b"HTTP/1.1 200 OK\r\n\r\nhello")


def test_http_connect_rejects_a_host_that_would_break_the_request_line() -> None:
    proxy = Proxy.parse("http://proxy.example:3128")
    with pytest.raises(ValueError, match="cannot be sent to an HTTP proxy"):
        HttpConnect(proxy, "evil.com\r\nX: y", 80, user_agent=None, max_size=100)


def test_socks5_exchange_with_credentials_and_a_name() -> None:
    proxy = Proxy.parse("socks5h://me:pw@proxy.example")
    assert proxy.port == 1080
    tunnel = Socks5(proxy, "example.com", 443)
    assert tunnel.data_to_send() == b"\x05\x02\x00\x02"
    assert tunnel.receive_data(b"\x05\x02") is False
    assert tunnel.data_to_send() == b"\x01\x02me\x02pw"
    assert tunnel.receive_data(b"\x01\x00") is False
    assert tunnel.data_to_send() == b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    # The reply's bound address, given as a name, in two pieces.
    assert tunnel.receive_data(b"\x05\x00\x00\x03\x04pr") is False
    assert tunnel.receive_data(b"ox\x00\x50") is True


def test_socks5_sends_an_ipv6_address() -> None:
    tunnel = Socks5(Proxy.parse("socks5://proxy.example"), "::1", 80)
    assert tunnel.data_to_send() == b"\x05\x01\x00"
    tunnel.receive_data(b"\x05\x00")
    assert tunnel.data_to_send() == b"\x05\x01\x00\x04" + b"\x00" * 15 + b"\x01\x00\x50"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"\x04\x5a", "answered with version 4, not 5"),
        (b"\x05\xff", "accepts none of the authentication methods offered (none)"),
        (b"\x05\x02", "asks for a user name and password"),
        (b"\x05\x01", "chose an authentication method not offered (0x01)"),
        (b"\x05\x00\x05\x04\x00\x01", "host unreachable (reply 0x04)"),
        (b"\x05\x00\x05\x09\x00\x01", "unknown reply (reply 0x09)"),
        (b"\x05\x00\x05\x00\x00\x07\x00", "unknown address type 0x07"),
    ],
)
def test_socks5_names_what_went_wrong(answer: bytes, message: str) -> None:
    tunnel = Socks5(Proxy.parse("socks5://proxy.example"), "127.0.0.1", 80)
    with pytest.raises(ProxyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tunnel.receive_data(answer)


def test_tunnel_reports_a_proxy_that_hangs_up() -> None:
    tunnel = Socks5(Proxy.parse("socks5://proxy.example"), "127.0.0.1", 80)
    with pytest.raises(ProxyError, match="closed the connection before the tunnel was open"):
        tunnel.receive_eof()


def test_proxy_url_is_shown_without_credentials() -> None:
    proxy = Proxy.parse("http://user:secret@[::1]:3128")
    assert str(proxy) == "http://[::1]:3128"
    assert proxy.username == "user" and proxy.password == "secret"
    with pytest.raises(ValueError, match="at most 255 bytes"):
        Proxy.parse(f"socks5://{'u' * 256}:p@proxy.example")
    with pytest.raises(ValueError, match="has a path"):
        Proxy.parse("http://proxy.example:3128/path")


# Any event loop: open_tunnel over trio's streams (what wschannel.trio's connect can use).


def _upgrade_request(host: str, port: int) -> bytes:
    return (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def _trio_upgrade_through(
    proxy: Proxy, scheme: str, targets: Targets, proxy_ssl: ssl.SSLContext | None = None
) -> bytes:
    """Under trio: a stream to ``proxy`` (TLS for https), the tunnel to the echo server,
    TLS inside for wss, an upgrade request; the first line of the answer."""
    import trio

    with trio.fail_after(TIMEOUT):
        return await _trio_upgrade(proxy, scheme, targets, proxy_ssl)


async def _trio_upgrade(
    proxy: Proxy, scheme: str, targets: Targets, proxy_ssl: ssl.SSLContext | None
) -> bytes:
    import trio

    stream: Any = await trio.open_tcp_stream(proxy.host, proxy.port)
    if proxy.tls:
        assert proxy_ssl is not None
        stream = trio.SSLStream(stream, proxy_ssl, server_hostname=proxy.host)
    host, port = ("localhost", targets.port(scheme))
    tunnel = (
        Socks5(proxy, host, port)
        if proxy.scheme.startswith("socks")
        else HttpConnect(proxy, host, port, user_agent=None, max_size=16384)
    )
    await open_tunnel(tunnel, stream.send_all, stream.receive_some)
    if scheme == "wss":
        stream = trio.SSLStream(stream, targets.client_ssl, server_hostname=host)
    await stream.send_all(_upgrade_request(host, port))
    answer = b""
    while b"\r\n" not in answer:
        data = await stream.receive_some(4096)
        assert data, "the server closed the tunnel"
        answer += data
    await stream.aclose()
    return answer.split(b"\r\n")[0]


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_open_tunnel_runs_under_trio_through_each_proxy(
    scheme: str,
    targets: Targets,
    http_proxy: ProxyProcess,
    https_proxy: TlsTerminator,
    socks_proxy: ProxyProcess,
) -> None:
    import trio

    proxies = [
        (Proxy.parse(http_proxy.url()), None),
        (
            Proxy.parse(https_proxy.url(servers.HTTP_USER, servers.HTTP_PASSWORD)),
            targets.client_ssl,
        ),
        (Proxy.parse(socks_proxy.url(scheme="socks5h")), None),
    ]
    for proxy, proxy_ssl in proxies:
        line = trio.run(_trio_upgrade_through, proxy, scheme, targets, proxy_ssl)
        assert line == b"HTTP/1.1 101 Switching Protocols", proxy
