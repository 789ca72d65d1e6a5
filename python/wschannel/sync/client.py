"""``connect``: open a WebSocket connection from a thread, blocking until it is open.

TCP (through a proxy if one is set), TLS and the opening handshake (RFC 6455 §4.1), again for
each redirect, run in the calling thread, within ``connect_timeout``; then the channel's
reader and writer threads take over the socket.
"""

from __future__ import annotations

import contextlib
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Iterable

from .._fragments import Delivery, in_pieces
from .._net import (
    USER_AGENT,
    ClientHop,
    ClientPlan,
    Headers,
    _Target,
    deflate_level,
    deflate_options,
    handshake_error,
)
from .._ping import check_keepalive
from .._proxy import Proxy, ProxySetting
from .._reconnect import Delays, RetryRule, backoff, redialable, retryable
from .._wschannel import Connection, DeflateOptions, HandshakeError
from ..defaults import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_PING_INTERVAL,
)
from ..exceptions import ProxyError, WebSocketChannelException
from .connection import SyncWebSocketChannel
from .messages import check_max_queue

__all__ = ["connect"]

_HANDSHAKE_READ_SIZE = 1 << 16
_TUNNEL_READ_SIZE = 1 << 12  # a proxy's answer: at most max_header_size, read in pieces
_RELAY_READ_SIZE = 1 << 16


@redialable
def connect(
    url: str,
    *,
    protocols: Iterable[str] | None = None,
    headers: Headers | None = None,
    ssl: ssl_module.SSLContext | bool | None = None,
    compression: bool | DeflateOptions | None = True,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: int | None = DEFAULT_MAX_QUEUE,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    pong_timeout: float | None = None,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    user_agent: str | None = USER_AGENT,
    max_header_size: int = 16384,
    proxy: ProxySetting = True,
    proxy_ssl: ssl_module.SSLContext | None = None,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    reconnect_delays: Delays = backoff,
    should_retry: RetryRule = retryable,
    delivery: Delivery = "messages",
) -> SyncWebSocketChannel:
    """Connect to a ``ws://`` or ``wss://`` URL; returns the channel once it is open.

    Raises :class:`~wschannel.WebSocketChannelException` if the connection could not be
    opened (``inner`` and ``__cause__`` hold the cause: DNS, refused, TLS, a non-101
    answer, a bad ``Sec-WebSocket-Accept``, an unoffered subprotocol...), ``TimeoutError``
    after ``connect_timeout`` seconds (the socket is then closed), and ``ValueError`` for an
    invalid URL. The options are :meth:`IOWebSocketChannel.connect
    <wschannel.io.IOWebSocketChannel.connect>`'s, with the same defaults:

    - ``protocols``: subprotocols to offer; a server choosing another fails the connection.
    - ``headers``: extra request headers. ``user`` and ``password`` in the URL become a
      ``Basic`` ``Authorization`` header; ``user_agent=None`` sends no ``User-Agent``.
    - ``ssl``: for ``wss://``, ``None`` verifies the server with the default CA store, an
      :class:`ssl.SSLContext` is used as it is, ``False`` skips verification.
    - ``compression``: offer permessage-deflate (RFC 7692) with default settings (``True``),
      with given settings (a ``DeflateOptions``), or not (``False``).
    - ``max_message_size``: larger messages from the server fail the connection (1009).
    - ``max_queue``: received messages buffered before reading pauses (backpressure).
    - ``ping_interval``: seconds between keepalive pings (a ping after each interval without
      a pong; 20 s); ``None`` sends none.
    - ``pong_timeout``: seconds a keepalive ping waits for its pong before the connection is
      closed with 1001; ``None`` (default): as long as ``ping_interval``.
    - ``close_timeout``: seconds the closing handshake may take.
    - ``reconnect_delays``: when the channel is iterated (``for channel in
      wschannel.sync.connect(url)``, which reconnects), a function returning the delays in
      seconds before each new attempt; :func:`wschannel.backoff` by default.
    - ``should_retry``: when iterating, called with the exception of an attempt that failed:
      ``True`` to try again after the next delay, ``False`` to raise it;
      :func:`wschannel.retryable` by default (network errors, timeouts, 5xx and 429).
    - ``proxy``: the proxy to go through, as a URL (``http://``, ``https://``,
      ``socks5://``, ``socks5h://``, with ``user:password@`` for its credentials); ``True``
      (default) takes the environment's (``https_proxy``, ``all_proxy``..., not for hosts in
      ``no_proxy``), ``None`` connects directly. See docs/client.md.
    - ``proxy_ssl``: the TLS context for an ``https://`` proxy (default: verify it with the
      default CA store).
    - ``max_redirects``: how many redirects (301, 302, 303, 307, 308) the opening handshake
      follows; ``0`` follows none.
    - ``delivery``: ``"messages"`` (default), or ``"pieces"``: messages are received in
      pieces from the first frame (read them with ``channel.fragments()``), each at most
      ``max_message_size`` in total (``None``: any size, since none is assembled).

    ``None`` disables each limit. A connection that fails names the URL;
    :class:`~wschannel.exceptions.ProxyError` when the proxy refused or could not be reached.
    """
    pieces_first = in_pieces(delivery)
    check_max_queue(max_queue)
    check_keepalive(ping_interval, pong_timeout)
    offered = list(protocols or ())
    deflate = deflate_options(compression)
    plan = ClientPlan(
        str(url),
        ssl=ssl,
        protocols=offered,
        headers=headers,
        user_agent=user_agent,
        deflate=deflate,
        max_header_size=max_header_size,
        proxy=proxy,
        proxy_ssl=proxy_ssl,
        max_redirects=max_redirects,
        unix_socket=False,
    )
    deadline = None if connect_timeout is None else time.monotonic() + connect_timeout
    sock: socket.socket | None = None
    hop = plan.first
    try:
        while True:
            sock = _open_socket(hop, plan, deadline)
            try:
                _handshake(sock, hop, deadline)
                break
            except WebSocketChannelException:
                next_hop = plan.after(hop)
                if next_hop is None:
                    raise
            sock.close()
            sock = None
            hop = next_hop
        handshake = hop.handshake
        protocol = handshake.protocol
        if protocol is not None and protocol not in offered:
            raise WebSocketChannelException(
                f"The server chose the subprotocol {protocol!r}, which was not offered."
            )
        sock.settimeout(None)
        conn = Connection(
            True,
            max_message_size=max_message_size,
            deflate=handshake.extensions,
            deflate_level=deflate_level(deflate),
        )
        if pieces_first:  # before the channel reads: pieces from the first frame
            conn.set_delivery(True, max_message_size=max_message_size)
    except BaseException as exc:
        if sock is not None:
            sock.close()
        if deadline is not None and isinstance(exc, TimeoutError) and exc.errno is None:
            raise plan.timeout_error(connect_timeout) from None
        if isinstance(exc, WebSocketChannelException):
            raise plan.name_url(exc) from exc.__cause__
        if isinstance(exc, OSError | HandshakeError | ValueError):
            raise plan.name_url(WebSocketChannelException.from_inner(exc)) from exc
        raise
    return SyncWebSocketChannel(
        sock,
        conn,
        protocol=protocol,
        max_queue=max_queue,
        ping_interval=ping_interval,
        pong_timeout=pong_timeout,
        close_timeout=close_timeout,
        leftover=handshake.leftover(),
    )


def _handshake(sock: socket.socket, hop: ClientHop, deadline: float | None) -> None:
    """The opening handshake of ``hop`` over ``sock``: :class:`InvalidStatus
    <wschannel.exceptions.InvalidStatus>` for another status than 101 (a redirect among
    them), :class:`WebSocketChannelException` for an invalid answer."""
    handshake = hop.handshake
    sock.sendall(handshake.request())
    while True:
        sock.settimeout(_remaining(deadline))
        data = sock.recv(_HANDSHAKE_READ_SIZE)
        if not data:
            raise ConnectionResetError("The server closed the connection during the handshake.")
        try:
            if handshake.receive_data(data):
                return
        except HandshakeError as exc:
            raise handshake_error(exc, handshake) from exc


def _open_socket(hop: ClientHop, plan: ClientPlan, deadline: float | None) -> socket.socket:
    """A socket connected to ``hop``'s target (TLS done for ``wss://``): directly, or
    through its proxy's tunnel."""
    target = hop.target
    proxy = hop.proxy
    if proxy is None:
        sock = socket.create_connection((target.host, target.port), _remaining(deadline))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _wrap_target(sock, target, deadline)
        except BaseException:
            sock.close()
            raise
    sock = _connect_proxy(proxy, plan.proxy_ssl, deadline)
    try:
        address = None
        if not proxy.resolves_names:
            try:
                infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise OSError(
                    f"could not resolve {target.host!r} for the socks5:// proxy: {exc}"
                ) from exc
            address = str(infos[0][4][0])
        tunnel = hop.tunnel(address, plan.user_agent, plan.tunnel_limit())
        sock.sendall(tunnel.data_to_send())
        while not tunnel.done:
            sock.settimeout(_remaining(deadline))
            data = sock.recv(_TUNNEL_READ_SIZE)
            if not data:
                tunnel.receive_eof()
            tunnel.receive_data(data)
            outgoing = tunnel.data_to_send()
            if outgoing:
                sock.sendall(outgoing)
        if target.ssl is not None and isinstance(sock, ssl_module.SSLSocket):
            # TLS inside the https:// proxy's TLS: the target's TLS runs over one end of a
            # socket pair, and two threads relay between the other end and the proxy.
            inner, outer = socket.socketpair()
            _Relay(sock, outer).start()
            sock = inner
        return _wrap_target(sock, target, deadline)
    except BaseException:
        sock.close()
        raise


def _connect_proxy(
    proxy: Proxy, context: ssl_module.SSLContext | None, deadline: float | None
) -> socket.socket:
    """A socket to ``proxy`` (TLS done for an ``https://`` one); ``ProxyError`` if it
    cannot be reached."""
    sock = None
    try:
        sock = socket.create_connection((proxy.host, proxy.port), _remaining(deadline))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy.tls:
            assert context is not None
            sock.settimeout(_remaining(deadline))
            sock = context.wrap_socket(sock, server_hostname=proxy.host)
        return sock
    except OSError as exc:
        if sock is not None:
            sock.close()
        if isinstance(exc, TimeoutError) and exc.errno is None:
            raise  # connect_timeout
        raise ProxyError(f"could not reach proxy {proxy}: {exc}", proxy=str(proxy)) from exc


def _wrap_target(sock: socket.socket, target: _Target, deadline: float | None) -> socket.socket:
    """TLS to the target over ``sock`` for ``wss://`` (the TLS handshake within the
    deadline); ``sock`` itself for ``ws://``."""
    if target.ssl is None:
        return sock
    sock.settimeout(_remaining(deadline))
    return target.ssl.wrap_socket(sock, server_hostname=target.host)


class _Relay:
    """Copies bytes both ways between a connection's end of a socket pair (``local``) and
    the TLS connection to an ``https://`` proxy (``remote``), one thread per direction,
    passing each direction's end on (``SHUT_WR``); when both have ended, or either fails,
    both sockets are closed."""

    def __init__(self, remote: ssl_module.SSLSocket, local: socket.socket) -> None:
        remote.settimeout(None)
        self._remote = remote
        self._local = local
        self._lock = threading.Lock()
        self._running = 2
        name = f"wschannel-proxy-relay-{remote.fileno()}"
        self._threads = [
            threading.Thread(
                target=self._copy, args=(local, remote), name=f"{name}-up", daemon=True
            ),
            threading.Thread(
                target=self._copy, args=(remote, local), name=f"{name}-down", daemon=True
            ),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _copy(self, source: socket.socket, destination: socket.socket) -> None:
        try:
            while data := source.recv(_RELAY_READ_SIZE):
                destination.sendall(data)
            with contextlib.suppress(OSError):
                socket.socket.shutdown(destination, socket.SHUT_WR)
        except OSError:
            self._close()  # one side is gone: so is the connection
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            self._close()

    def _close(self) -> None:
        for sock in (self._local, self._remote):
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            sock.close()


def _remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (``None``: no limit); ``TimeoutError`` if none."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining
