"""``connect``: open a WebSocket connection from a thread, blocking until it is open.

TCP, TLS and the opening handshake (RFC 6455 §4.1) run in the calling thread, within
``connect_timeout``; then the channel's reader and writer threads take over the socket.
"""

from __future__ import annotations

import socket
import ssl as ssl_module
import time
from collections.abc import Iterable

from .._net import (
    USER_AGENT,
    Headers,
    _Target,
    client_handshake,
    deflate_level,
    deflate_options,
    handshake_error,
)
from .._wschannel import Connection, DeflateOptions, HandshakeError
from ..defaults import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PING_INTERVAL,
)
from ..exceptions import WebSocketChannelException
from .connection import SyncWebSocketChannel
from .messages import check_max_queue

__all__ = ["connect"]

_HANDSHAKE_READ_SIZE = 1 << 16


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

    ``None`` disables each limit.
    """
    check_max_queue(max_queue)
    target = _Target.parse(str(url), ssl)
    offered = list(protocols or ())
    deflate = deflate_options(compression)
    handshake = client_handshake(target, offered, headers, user_agent, deflate, max_header_size)
    deadline = None if connect_timeout is None else time.monotonic() + connect_timeout
    sock: socket.socket | None = None
    try:
        sock = socket.create_connection((target.host, target.port), _remaining(deadline))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.ssl is not None:
            sock = target.ssl.wrap_socket(sock, server_hostname=target.host)
        sock.sendall(handshake.request())
        while True:
            sock.settimeout(_remaining(deadline))
            data = sock.recv(_HANDSHAKE_READ_SIZE)
            if not data:
                raise ConnectionResetError("The server closed the connection during the handshake.")
            try:
                if handshake.receive_data(data):
                    break
            except HandshakeError as exc:
                raise handshake_error(exc, handshake) from exc
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
    except BaseException as exc:
        if sock is not None:
            sock.close()
        if deadline is not None and isinstance(exc, TimeoutError) and exc.errno is None:
            raise TimeoutError(f"Connecting timed out after {connect_timeout} seconds.") from None
        if isinstance(exc, WebSocketChannelException):
            raise
        if isinstance(exc, OSError | HandshakeError | ValueError):
            raise WebSocketChannelException.from_inner(exc) from exc
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


def _remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (``None``: no limit); ``TimeoutError`` if none."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining
