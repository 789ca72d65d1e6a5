"""What the client and server of both flavours, asyncio and blocking, share to open and run a
connection over a socket: no event loop, no channel.

The client's target from its URL (:class:`_Target`, with its TLS context), the opening
handshake's request (:func:`client_handshake`, :data:`USER_AGENT`, :data:`Headers`), the
permessage-deflate settings of a ``compression`` argument (:func:`deflate_options`), a
server's refusal (:data:`Response`), a peer's address for logs (:func:`format_peer`) and
what the kernel has not sent yet (:func:`kernel_unsent`). :mod:`wschannel.io`,
:mod:`wschannel.server` and :mod:`wschannel.sync` import these from here, so the blocking
flavour loads no asyncio channel; the public ones are importable from their old places too.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl as ssl_module
import sys
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias

from ._proxy import HttpConnect, Proxy, ProxySetting, Socks5, Tunnel, select_proxy
from ._redirect import Redirects, redact
from ._tls import default_context
from ._wschannel import (
    DEFAULT_DEFLATE_LEVEL,
    ClientHandshake,
    DeflateOptions,
    HandshakeError,
    __version__,
)
from .exceptions import InvalidStatus, WebSocketChannelException

__all__ = [
    "DEFAULT_LEVEL",
    "SERVER_WINDOW_BITS",
    "USER_AGENT",
    "ClientHop",
    "ClientPlan",
    "Headers",
    "Response",
    "client_handshake",
    "deflate_level",
    "deflate_options",
    "format_peer",
    "handshake_error",
    "header_list",
    "kernel_unsent",
]

client_logger = logging.getLogger("wschannel.client")

USER_AGENT: Final = (
    f"Python/{sys.version_info.major}.{sys.version_info.minor} wschannel/{__version__}"
)

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
"""Extra HTTP headers: a mapping, or ``(name, value)`` pairs (to repeat a header)."""

Response: TypeAlias = tuple[int, Sequence[tuple[str, str]], bytes]
"""An HTTP response refusing an upgrade: status, headers, body."""

# The ioctl asking how much of a socket's output the peer has not acknowledged (Linux).
if sys.platform == "linux":
    import fcntl
    import termios

    _SIOCOUTQ: int | None = termios.TIOCOUTQ
else:
    _SIOCOUTQ = None


SERVER_WINDOW_BITS: Final = 13
"""A server's default compression window (``compression=True``): 8 KiB each way.

Written here, not in the binding: only :func:`deflate_options` uses it (the binding's
``DeflateOptions()`` means no limit asked, 15 bits, in both roles), so this is its one place.

Both the server's own window and, when the client allows it (``client_max_window_bits`` in its
offer), the client's. With :data:`DEFAULT_LEVEL` it compresses JSON-like messages of a few KiB
as small as zlib's level 6 did with websockets' 4 KiB windows, with about 8 % less CPU per
message (docs/performance.md, "Compression"); a connection keeps at most two windows of
history each way between messages (32 KiB), well under the 64 KiB a busy one may cost."""

DEFAULT_LEVEL: Final = DEFAULT_DEFLATE_LEVEL
"""The compression level when ``compression`` does not give one: the binding's
``DEFAULT_DEFLATE_LEVEL`` (4), which is also the default of ``DeflateOptions(level=...)`` and
of ``Connection(deflate_level=...)``, so the number is written once, in the binding.
zlib-rs's level 4 searches hash chains of at most 24 entries where level 6 searches 128.
On the benchmark's JSON corpus that costs 3 % more bytes at the same window, which the 8 KiB
windows above make up (510 B against 516 B per 2.5 KiB message at 4 KiB and level 6); with
32 KiB windows it is 5 % more (494 B against 470 B)."""


def deflate_options(
    compression: bool | DeflateOptions | None, *, server: bool = False
) -> DeflateOptions | None:
    """The permessage-deflate settings for a ``compression`` argument (RFC 7692)."""
    if compression is None or compression is False:
        return None
    if compression is True:
        if server:
            return DeflateOptions(
                server_max_window_bits=SERVER_WINDOW_BITS,
                client_max_window_bits=SERVER_WINDOW_BITS,
            )
        return DeflateOptions()
    if isinstance(compression, DeflateOptions):
        return compression
    raise TypeError(f"compression must be a bool or DeflateOptions, not {type(compression)}.")


def deflate_level(options: DeflateOptions | None) -> int:
    """The compression level of ``options`` (:data:`DEFAULT_LEVEL` when it does not say)."""
    return DEFAULT_LEVEL if options is None else options.level


def format_peer(address: Any) -> str | None:
    """A peer address for logs: ``host:port`` (``[host]:port`` for IPv6), ``unix:path``."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    if isinstance(address, str | bytes):
        return f"unix:{os.fsdecode(address) or '?'}"
    return None if address is None else str(address)


def header_list(headers: Headers | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(name), str(value)) for name, value in headers.items()]
    return [(str(name), str(value)) for name, value in headers]


def client_handshake(
    target: _Target,
    protocols: list[str],
    headers: Headers | None,
    user_agent: str | None,
    deflate: DeflateOptions | None,
    max_header_size: int,
) -> ClientHandshake:
    """The client's opening handshake for ``target`` (RFC 6455 §4.1): the user's headers,
    Basic auth from the URL's user and password, and ``user_agent`` unless the headers name
    one."""
    request_headers = header_list(headers)
    if target.authorization is not None:
        request_headers.append(("Authorization", target.authorization))
    if user_agent is not None and not any(
        name.lower() == "user-agent" for name, _ in request_headers
    ):
        request_headers.append(("User-Agent", user_agent))
    return ClientHandshake(
        target.host_header,
        target.resource,
        protocols=protocols,
        headers=request_headers,
        deflate=deflate,
        max_header_size=max_header_size,
    )


class _Target:
    """Where a client connects, from its URL (RFC 6455 §3)."""

    __slots__ = ("authorization", "host", "host_header", "port", "resource", "ssl")

    def __init__(
        self,
        host: str,
        port: int,
        host_header: str,
        resource: str,
        ssl: ssl_module.SSLContext | None,
        authorization: str | None,
    ) -> None:
        self.host = host
        self.port = port
        self.host_header = host_header
        self.resource = resource
        self.ssl = ssl
        self.authorization = authorization

    @classmethod
    def parse(cls, url: str, ssl: ssl_module.SSLContext | bool | None) -> _Target:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss"):
            raise ValueError(f"Unsupported URL scheme {parts.scheme!r}: use ws:// or wss://.")
        if parts.fragment:
            raise ValueError("A WebSocket URL cannot have a fragment (RFC 6455 §3).")
        host = parts.hostname
        if not host:
            raise ValueError(f"The URL {url!r} has no host.")
        default_port = 443 if scheme == "wss" else 80
        port = parts.port or default_port  # raises ValueError for an invalid port
        host_name = f"[{host}]" if ":" in host else host
        host_header = host_name if port == default_port else f"{host_name}:{port}"
        resource = parts.path or "/"
        if parts.query:
            resource = f"{resource}?{parts.query}"
        authorization = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            credentials = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            authorization = f"Basic {credentials}"
        return cls(host, port, host_header, resource, _ssl_context(scheme, ssl), authorization)


def _ssl_context(
    scheme: str, ssl: ssl_module.SSLContext | bool | None
) -> ssl_module.SSLContext | None:
    if scheme == "ws":
        if ssl is not None and ssl is not False:
            raise ValueError("ssl= is for wss:// URLs; this one is ws://.")
        return None
    if isinstance(ssl, ssl_module.SSLContext):
        return ssl
    if ssl is not False:
        return default_context()  # made once: shared by every connection
    context = ssl_module.create_default_context()
    if ssl is False:
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context


def handshake_error(exc: HandshakeError, handshake: ClientHandshake) -> WebSocketChannelException:
    """The client's error for a failed opening handshake: :class:`InvalidStatus` (with the
    response's status and headers) when the server answered with another status than 101,
    else a :class:`WebSocketChannelException` whose ``inner`` is ``exc``."""
    status = handshake.status
    if status >= 100 and status != 101:
        return InvalidStatus.refused(exc, status, handshake.headers)
    return WebSocketChannelException.from_inner(exc)


def kernel_unsent(sock: socket.socket | None) -> int:
    """Bytes the kernel holds for the socket, not yet acknowledged by the peer
    (``SIOCOUTQ``); 0 where that cannot be asked (not Linux, or no socket)."""
    if sock is None or _SIOCOUTQ is None:
        return 0
    try:
        answer = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):  # closed meanwhile
        return 0
    return int.from_bytes(answer, sys.byteorder, signed=True)


class ClientHop:
    """One connection of a client's attempt to open: the URL, where it connects
    (:class:`_Target`), the proxy it goes through (or ``None``) and its opening handshake."""

    __slots__ = ("handshake", "proxy", "target", "url")

    def __init__(
        self, url: str, target: _Target, proxy: Proxy | None, handshake: ClientHandshake
    ) -> None:
        self.url = url
        self.target = target
        self.proxy = proxy
        self.handshake = handshake

    def tunnel(self, address: str | None, user_agent: str | None, max_size: int) -> Tunnel:
        """The tunnel's opening through :attr:`proxy` to the target: ``address`` is the
        target's IP address for a ``socks5://`` proxy (which is not given names; see
        :attr:`Proxy.resolves_names`), else ``None``."""
        proxy = self.proxy
        assert proxy is not None
        target = self.target
        if proxy.scheme.startswith("socks"):
            return Socks5(proxy, address or target.host, target.port)
        return HttpConnect(
            proxy, target.host, target.port, user_agent=user_agent, max_size=max_size
        )


class ClientPlan:
    """What a client connects to, hop after hop: the URL's, then each redirect's
    (:class:`~wschannel._redirect.Redirects`), each through its proxy
    (:func:`~wschannel._proxy.select_proxy`).

    Made at the call, so an invalid URL, proxy or option raises there.
    """

    __slots__ = (
        "_deflate",
        "_headers",
        "_max_header_size",
        "_protocols",
        "_proxy",
        "_ssl",
        "_unix_socket",
        "first",
        "proxy_ssl",
        "redirects",
        "user_agent",
    )

    def __init__(
        self,
        url: str,
        *,
        ssl: ssl_module.SSLContext | bool | None,
        protocols: list[str],
        headers: Headers | None,
        user_agent: str | None,
        deflate: DeflateOptions | None,
        max_header_size: int,
        proxy: ProxySetting,
        proxy_ssl: ssl_module.SSLContext | None,
        max_redirects: int,
        unix_socket: bool,
    ) -> None:
        if proxy_ssl is not None and not isinstance(proxy_ssl, ssl_module.SSLContext):
            raise TypeError(
                "proxy_ssl must be an ssl.SSLContext (for an https:// proxy), not "
                f"{type(proxy_ssl).__name__}."
            )
        self._ssl = ssl
        self._protocols = protocols
        self._headers = header_list(headers)
        self.user_agent = user_agent
        self._deflate = deflate
        self._max_header_size = max_header_size
        self._proxy = proxy
        self.proxy_ssl = proxy_ssl
        self._unix_socket = unix_socket
        self.redirects = Redirects(url, max_redirects)
        first = self._hop(url, _Target.parse(url, ssl))
        if first.proxy is not None and first.proxy.tls and proxy_ssl is None:
            self.proxy_ssl = ssl_module.create_default_context()
        self.first = first

    def _hop(self, url: str, target: _Target) -> ClientHop:
        proxy = select_proxy(
            self._proxy,
            target.host,
            target.port,
            target.ssl is not None,
            unix_socket=self._unix_socket,
        )
        headers = self.redirects.headers_for(url, self._headers)
        handshake = client_handshake(
            target, self._protocols, headers, self.user_agent, self._deflate, self._max_header_size
        )
        return ClientHop(url, target, proxy, handshake)

    def after(self, hop: ClientHop) -> ClientHop | None:
        """The next hop after ``hop``'s handshake failed, if its answer is a redirect to
        follow; ``None`` if it is not (the handshake's error stands). Raises
        :class:`~wschannel.exceptions.WebSocketChannelException` for a redirect that cannot
        be followed, ``ValueError`` for a redirect to an unusable URL."""
        handshake = hop.handshake
        location = next(
            (value for name, value in handshake.headers if name.lower() == "location"), None
        )
        url = self.redirects.follow(handshake.status, location)
        if url is None:
            return None
        if client_logger.isEnabledFor(logging.INFO):
            client_logger.info(
                "Redirected from %s to %s (%d, redirect %d of at most %d)",
                redact(hop.url),
                redact(url),
                handshake.status,
                len(self.redirects.chain) - 1,
                self.redirects.max_redirects,
            )
        same_origin = self.redirects.same_origin(url)
        if self._unix_socket and not same_origin:
            raise WebSocketChannelException(
                f"Cannot follow the redirect to {redact(url)} over unix_socket: it is another "
                "origin than the URL's."
            )
        target = _Target.parse(url, self._ssl)
        if target.authorization is None and same_origin:
            target.authorization = self.first.target.authorization
        next_hop = self._hop(url, target)
        if next_hop.proxy is not None and next_hop.proxy.tls and self.proxy_ssl is None:
            self.proxy_ssl = ssl_module.create_default_context()
        return next_hop

    def tunnel_limit(self) -> int:
        """The most bytes an HTTP proxy's answer to ``CONNECT`` may have before its body."""
        return self._max_header_size

    def name_url(self, error: WebSocketChannelException) -> WebSocketChannelException:
        """``error`` with the URL (and where it redirected to) in front of its message."""
        where = self.redirects.describe()
        prefix = f"Could not connect to {where}: "
        message = error.message or type(error).__name__
        if not message.startswith("Could not connect to "):
            error.message = prefix + message
            error.args = (error.message,)
        return error

    def timeout_error(self, connect_timeout: float | None) -> TimeoutError:
        """The error after ``connect_timeout`` seconds without the connection open."""
        return TimeoutError(
            f"Connecting to {self.redirects.describe()} timed out after {connect_timeout} seconds."
        )
