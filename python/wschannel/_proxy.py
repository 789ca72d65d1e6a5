"""Proxies for the clients: which proxy a connection goes through, and the tunnel's opening.

Both flavours, asyncio and blocking, use this module; it does no I/O. :func:`select_proxy`
picks the proxy for a URL from a ``proxy`` argument (:data:`ProxySetting`); the tunnels,
:class:`HttpConnect` (an HTTP ``CONNECT``, RFC 9110 §9.3.6, to an ``http://`` or
``https://`` proxy) and :class:`Socks5` (RFC 1928, with RFC 1929's username and password,
to a ``socks5://`` or ``socks5h://`` proxy), are sans-I/O: the driver writes what
``data_to_send()`` returns and feeds what it reads to ``receive_data()`` until that returns
``True``; from then on the connection carries the WebSocket's bytes (TLS first, for
``wss://``). Each raises :class:`~wschannel.exceptions.ProxyError` for a refusal or a
malformed answer, and reads at most a bounded number of bytes.

Written here rather than with a SOCKS library: two small state machines serve the asyncio and
the blocking client alike (and any other I/O), with no dependency for the package; the
``CONNECT`` answer is parsed by the standard library's :mod:`http.client`.

From the environment (``proxy=True``, the default), as ``urllib.request`` reads it
(:func:`urllib.request.getproxies`: the ``*_proxy`` variables, lower case first, and on macOS
and Windows the system's settings; :func:`urllib.request.proxy_bypass`: ``no_proxy``): a host
in ``no_proxy`` goes direct; otherwise the first of these that is set, in websockets' order
(RFC 6455 §4.1 prefers SOCKS, then the HTTPS proxy), then ``all_proxy``:

- ``wss://``: ``wss_proxy``, the system's SOCKS proxy, ``https_proxy``, ``all_proxy``;
- ``ws://``: ``ws_proxy``, the system's SOCKS proxy, ``https_proxy``, ``http_proxy``,
  ``all_proxy``.
"""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import re
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Final, Literal, TypeAlias

from .exceptions import ProxyError

__all__ = [
    "SOCKS_REPLIES",
    "HttpConnect",
    "Proxy",
    "ProxySetting",
    "Socks5",
    "Tunnel",
    "environment_proxy",
    "open_tunnel",
    "select_proxy",
]

ProxySetting: TypeAlias = str | Literal[True] | None
"""A ``proxy`` argument: a proxy URL, ``True`` for the environment's, ``None`` for none."""

PROXY_SCHEMES: Final = ("http", "https", "socks5", "socks5h")

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}

# What an authority (host and port) sent in a CONNECT line may hold: RFC 3986's reg-name,
# IP literals and a port; never a space or a line break.
_AUTHORITY: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:\[\]%]+")


class Proxy:
    """A proxy, from its URL: ``scheme://[user:password@]host[:port]``.

    ``scheme`` is ``http``, ``https`` (TLS to the proxy), ``socks5`` (the client resolves the
    target's name) or ``socks5h`` (the proxy does). ``str()`` is the URL without credentials,
    for messages.
    """

    __slots__ = ("host", "password", "port", "scheme", "username")

    def __init__(
        self, scheme: str, host: str, port: int, username: str | None, password: str | None
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.username = username
        self.password = password

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """Raises ``ValueError`` saying what is wrong with ``url`` and what is accepted."""
        if not isinstance(url, str):
            raise TypeError(f"A proxy URL must be a str, not {type(url).__name__}.")
        parts = urllib.parse.urlsplit(url.strip())
        scheme = parts.scheme.lower()
        shown = _without_credentials(url)
        if scheme not in PROXY_SCHEMES:
            hint = " (socks4 is not supported)" if scheme.startswith("socks4") else ""
            raise ValueError(
                f"Unsupported proxy {shown!r}{hint}: use an http://, https://, socks5:// or "
                "socks5h:// URL, such as http://proxy.example:3128."
            )
        host = parts.hostname
        if not host:
            raise ValueError(f"The proxy URL {shown!r} has no host.")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"The proxy URL {shown!r} has a path, query or fragment: give only "
                "scheme://[user:password@]host:port."
            )
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise ValueError(f"The proxy URL {shown!r} has an invalid port.") from exc
        username = password = None
        if parts.username is not None:
            username = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            if scheme.startswith("socks") and (
                len(username.encode()) > 255 or len(password.encode()) > 255
            ):
                raise ValueError(
                    "A SOCKS5 user name and password are at most 255 bytes each (RFC 1929)."
                )
        return cls(scheme, host, port, username, password)

    @property
    def tls(self) -> bool:
        """Whether the connection to the proxy itself is TLS (an ``https://`` proxy)."""
        return self.scheme == "https"

    @property
    def resolves_names(self) -> bool:
        """Whether the proxy is given the target's name (all but ``socks5://``)."""
        return self.scheme != "socks5"

    def __str__(self) -> str:
        return f"{self.scheme}://{_authority(self.host, self.port)}"

    def __repr__(self) -> str:
        return f"Proxy({str(self)!r})"


def select_proxy(
    proxy: ProxySetting, host: str, port: int, secure: bool, *, unix_socket: bool = False
) -> Proxy | None:
    """The proxy to go through to ``host``:``port`` for a ``proxy`` argument, or ``None``
    for a direct connection. Raises ``TypeError`` or ``ValueError`` for an unusable
    argument, or proxy URL in the environment."""
    if proxy is None:
        return None
    if proxy is True:
        if unix_socket:
            return None  # the environment's proxies are for the network, not a local socket
        url = environment_proxy(host, port, secure)
        if url is None:
            return None
        try:
            return Proxy.parse(url)
        except ValueError as exc:
            raise ValueError(f"{exc} (It came from the environment's *_proxy variables.)") from None
    if isinstance(proxy, str):
        if unix_socket:
            raise ValueError(
                "proxy= and unix_socket= cannot be used together: a proxy reaches hosts on "
                "the network, a Unix socket is local."
            )
        return Proxy.parse(proxy)
    if proxy is False:
        raise TypeError("proxy=False is not a setting: use proxy=None to connect directly.")
    raise TypeError(
        "proxy must be a proxy URL (str), True (the environment's proxy, the default) or "
        f"None (connect directly), not {type(proxy).__name__}."
    )


def environment_proxy(host: str, port: int, secure: bool) -> str | None:
    """The environment's proxy URL for ``host``:``port`` (the order is in this module's
    docstring), or ``None`` when there is none or ``no_proxy`` names the host."""
    if _bypassed(host, port):
        return None
    proxies = urllib.request.getproxies()
    schemes = (
        ("wss", "socks", "https", "all") if secure else ("ws", "socks", "https", "http", "all")
    )
    for scheme in schemes:
        url = proxies.get(scheme)
        if url:
            if scheme == "socks" and url.startswith("http://"):
                # The system's SOCKS setting, as urllib reports it (macOS, Windows).
                url = "socks5h://" + url.removeprefix("http://")
            elif "://" not in url:
                url = "http://" + url  # as curl and urllib read "host:port"
            return url
    return None


def _bypassed(host: str, port: int) -> bool:
    """Whether ``no_proxy`` (or the system's bypass list) names ``host``, with or without
    its port."""
    return bool(
        urllib.request.proxy_bypass(_authority(host, port)) or urllib.request.proxy_bypass(host)
    )


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _without_credentials(url: str) -> str:
    """``url`` with its ``user:password@`` removed, for messages."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class Tunnel:
    """A tunnel's opening through a proxy to ``host``:``port``, without I/O.

    Write :meth:`data_to_send`, feed the answer to :meth:`receive_data` until it returns
    ``True``, writing :meth:`data_to_send` after each call. Raises
    :class:`~wschannel.exceptions.ProxyError` when the proxy refuses or answers wrongly.
    """

    def __init__(self, proxy: Proxy, host: str, port: int) -> None:
        self.proxy = proxy
        self.host = host
        self.port = port
        self._outgoing = bytearray()
        self._incoming = bytearray()
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the tunnel is open: the proxy's next bytes are the target's."""
        return self._done

    def data_to_send(self) -> bytes:
        """The bytes to write to the proxy now (empty when none)."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def receive_data(self, data: bytes) -> bool:
        """Feed bytes read from the proxy; ``True`` once the tunnel is open."""
        if self._done:
            raise ProxyError(
                self._message("sent data before the tunnel was used"), proxy=str(self.proxy)
            )
        self._incoming += data
        self._done = self._advance()
        if self._done and self._incoming:
            # The target speaks only after the client (the upgrade request, or TLS's hello).
            raise ProxyError(
                self._message(
                    f"sent {len(self._incoming)} bytes after its answer, before the tunnel "
                    "carried anything"
                ),
                proxy=str(self.proxy),
            )
        return self._done

    def receive_eof(self) -> None:
        """The proxy closed the connection: raises ``ProxyError`` unless the tunnel was open."""
        if not self._done:
            raise ProxyError(
                self._message("closed the connection before the tunnel was open"),
                proxy=str(self.proxy),
            )

    def _advance(self) -> bool:
        raise NotImplementedError

    def _message(self, what: str) -> str:
        return f"proxy {self.proxy} {what} (tunnel to {_authority(self.host, self.port)})"


async def open_tunnel(
    tunnel: Tunnel,
    send: Callable[[bytes], Awaitable[object]],
    receive: Callable[[], Awaitable[bytes | bytearray]],
) -> None:
    """Open ``tunnel`` over a byte stream given by its two coroutines: ``send(data)``
    writes, ``receive()`` reads some bytes (``b""`` at the end). For any event loop
    (trio's ``send_all``/``receive_some``, anyio's ``send``/``receive``...); raises
    :class:`~wschannel.exceptions.ProxyError` as :meth:`Tunnel.receive_data` does."""
    await send(tunnel.data_to_send())
    while not tunnel.done:
        data = await receive()
        if not data:
            tunnel.receive_eof()
        tunnel.receive_data(bytes(data))
        outgoing = tunnel.data_to_send()
        if outgoing:
            await send(outgoing)


class HttpConnect(Tunnel):
    """``CONNECT host:port`` to an HTTP proxy (RFC 9110 §9.3.6), with Basic credentials
    from the proxy URL (``Proxy-Authorization``, RFC 9110 §11.7.2). Any 2xx answer opens the
    tunnel; the answer's head may be at most ``max_size`` bytes."""

    def __init__(
        self, proxy: Proxy, host: str, port: int, *, user_agent: str | None, max_size: int
    ) -> None:
        super().__init__(proxy, host, port)
        authority = _authority(host, port)
        if _AUTHORITY.fullmatch(authority) is None:
            raise ValueError(f"The host {host!r} cannot be sent to an HTTP proxy.")
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if user_agent is not None:
            lines.append(f"User-Agent: {user_agent}")
        if proxy.username is not None:
            credentials = f"{proxy.username}:{proxy.password or ''}".encode()
            lines.append(f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}")
        self._outgoing += ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._max_size = max_size
        self.status = 0
        """The proxy's answer's status (0 until it came)."""

    def _advance(self) -> bool:
        end = self._incoming.find(b"\r\n\r\n")
        if end < 0:
            if len(self._incoming) > self._max_size:
                raise ProxyError(
                    self._message(
                        f"answered CONNECT with a head over {self._max_size} bytes; the limit "
                        "is max_header_size"
                    ),
                    proxy=str(self.proxy),
                )
            return False
        head = bytes(self._incoming[: end + 4])
        del self._incoming[: end + 4]
        status, reason = self._parse(head)
        self.status = status
        if 200 <= status < 300:
            return True
        self._incoming.clear()  # a body: not for the tunnel
        hint = ""
        if status in (401, 407):  # tinyproxy answers wrong credentials with 401
            hint = (
                " (check the user and password in the proxy URL)"
                if self.proxy.username is not None
                else " (give credentials in the proxy URL: scheme://user:password@host:port)"
            )
        raise ProxyError(
            f"proxy {self.proxy} refused the tunnel to {_authority(self.host, self.port)}: "
            f"{status} {reason}{hint}",
            proxy=str(self.proxy),
            status=status,
        )

    def _parse(self, head: bytes) -> tuple[int, str]:
        """The status and reason of an HTTP response head, by :mod:`http.client`."""
        response = http.client.HTTPResponse(_HeadSocket(head))  # type: ignore[arg-type]
        try:
            response.begin()
        except (http.client.HTTPException, ValueError) as exc:
            raise ProxyError(
                self._message(f"answered CONNECT with an invalid HTTP response ({exc!r})"),
                proxy=str(self.proxy),
            ) from exc
        return response.status, response.reason


class _HeadSocket:
    """What :class:`http.client.HTTPResponse` reads a response from: the head, in memory."""

    def __init__(self, head: bytes) -> None:
        self._head = head

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._head)


SOCKS_REPLIES: Final = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}
"""The SOCKS5 reply codes (RFC 1928 §6), by value."""

_NO_AUTHENTICATION: Final = 0x00
_USERNAME_PASSWORD: Final = 0x02
_NO_ACCEPTABLE_METHOD: Final = 0xFF


class Socks5(Tunnel):
    """A SOCKS5 ``CONNECT`` (RFC 1928), with username and password when the proxy URL has
    them (RFC 1929). ``host`` is sent as it is: an IP address (a ``socks5://`` proxy: the
    caller resolved the name) or a name (``socks5h://``, at most 255 bytes)."""

    def __init__(self, proxy: Proxy, host: str, port: int) -> None:
        super().__init__(proxy, host, port)
        self._address = self._encode_address(host) + port.to_bytes(2, "big")
        methods = [_NO_AUTHENTICATION]
        if proxy.username is not None:
            methods.append(_USERNAME_PASSWORD)
        self._outgoing += bytes([5, len(methods), *methods])
        self._state = "method"

    @staticmethod
    def _encode_address(host: str) -> bytes:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            name = host.encode("idna")
            if len(name) > 255:
                raise ValueError(f"The host name {host!r} is too long for SOCKS5.") from None
            return bytes([0x03, len(name)]) + name
        return (b"\x01" if address.version == 4 else b"\x04") + address.packed

    def _advance(self) -> bool:
        while True:
            if self._state == "method":
                if not self._take_method():
                    return False
            elif self._state == "auth":
                if not self._take_auth():
                    return False
            else:
                return self._take_reply()

    def _take(self, size: int) -> bytes | None:
        if len(self._incoming) < size:
            return None
        data = bytes(self._incoming[:size])
        del self._incoming[:size]
        return data

    def _take_method(self) -> bool:
        answer = self._take(2)
        if answer is None:
            return False
        self._check_version(answer[0], 5)
        method = answer[1]
        if method == _USERNAME_PASSWORD and self.proxy.username is not None:
            user = self.proxy.username.encode()
            password = (self.proxy.password or "").encode()
            self._outgoing += bytes([1, len(user)]) + user + bytes([len(password)]) + password
            self._state = "auth"
        elif method == _NO_AUTHENTICATION:
            self._send_request()
        elif method == _NO_ACCEPTABLE_METHOD:
            offered = "none" if self.proxy.username is None else "none, username/password"
            raise ProxyError(
                self._message(f"accepts none of the authentication methods offered ({offered})")
                + self._credentials_hint(),
                proxy=str(self.proxy),
            )
        elif method == _USERNAME_PASSWORD:
            raise ProxyError(
                self._message("asks for a user name and password") + self._credentials_hint(),
                proxy=str(self.proxy),
            )
        else:
            raise ProxyError(
                self._message(f"chose an authentication method not offered (0x{method:02x})"),
                proxy=str(self.proxy),
            )
        return True

    def _credentials_hint(self) -> str:
        if self.proxy.username is None:
            return ": give them in the proxy URL, socks5://user:password@host:port"
        return ""

    def _take_auth(self) -> bool:
        answer = self._take(2)
        if answer is None:
            return False
        self._check_version(answer[0], 1)
        if answer[1] != 0:
            raise ProxyError(
                self._message(
                    f"refused the user name and password (status 0x{answer[1]:02x}, RFC 1929)"
                ),
                proxy=str(self.proxy),
            )
        self._send_request()
        return True

    def _send_request(self) -> None:
        self._outgoing += b"\x05\x01\x00" + self._address
        self._state = "reply"

    def _take_reply(self) -> bool:
        head = bytes(self._incoming[:5])
        if len(head) < 2:
            return False
        self._check_version(head[0], 5)
        reply = head[1]
        if reply != 0:  # the refusal, whatever address follows
            name = SOCKS_REPLIES.get(reply, "unknown reply")
            self._incoming.clear()
            raise ProxyError(
                f"SOCKS proxy {self.proxy} refused the connection to "
                f"{_authority(self.host, self.port)}: {name} (reply 0x{reply:02x})",
                proxy=str(self.proxy),
                reply=reply,
            )
        if len(head) < 5:
            return False
        address_type = head[3]
        if address_type == 0x01:
            size = 4 + 4 + 2
        elif address_type == 0x04:
            size = 4 + 16 + 2
        elif address_type == 0x03:
            size = 4 + 1 + head[4] + 2
        else:
            raise ProxyError(
                self._message(f"answered with an unknown address type 0x{address_type:02x}"),
                proxy=str(self.proxy),
            )
        return self._take(size) is not None

    def _check_version(self, version: int, expected: int) -> None:
        if version != expected:
            raise ProxyError(
                self._message(
                    f"answered with version {version}, not {expected}: is it a SOCKS5 proxy?"
                ),
                proxy=str(self.proxy),
            )
