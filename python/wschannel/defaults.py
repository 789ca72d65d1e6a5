"""Every default limit and timeout, in one place; each flavour's module re-exports the ones
it uses (``wschannel.io.DEFAULT_CLOSE_TIMEOUT`` is this module's). Imports nothing, so the
browser flavour and the blocking one can use it without the asyncio stack.

Why each value is what it is: docs/reliability.md (the bounds) and docs/asyncio.md.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "COMPACT_INTERVAL",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_PENDING_HANDSHAKES",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_REDIRECTS",
    "DEFAULT_OPEN_TIMEOUT",
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_WRITE_LIMIT",
    "DEFAULT_WRITE_QUEUE",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
"""The largest message (after decompression) accepted from the peer: 1 MiB."""

DEFAULT_MAX_QUEUE: Final = 16
"""How many received messages a stream buffers before reading from the network pauses."""

DEFAULT_WRITE_LIMIT: Final = 1 << 16
"""The write buffer size above which :meth:`WebSocketSink.flush` waits (and a server stops
reading): 64 KiB. In the browser, the ``bufferedAmount`` above which ``flush`` waits."""

DEFAULT_WRITE_QUEUE: Final = 64
"""ASGI: messages waiting for the server's ``send`` above which ``sink.flush()`` waits."""

DEFAULT_CLOSE_TIMEOUT: Final = 10.0
"""Seconds the closing handshake may go without progress before the socket is closed
regardless: while frames written before the close frame still leave, the time without a byte
taken by the peer; then the time the peer has to answer."""

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
"""Seconds a client has for TCP, TLS and the opening handshake together (as websockets)."""

DEFAULT_MAX_REDIRECTS: Final = 10
"""Redirects (301, 302, 303, 307, 308) a client's opening handshake follows before it gives
up: as websockets (``max_redirects``); browsers follow about 20 for a page."""

DEFAULT_PING_INTERVAL: Final = 20.0
"""Seconds between keepalive pings (a ping after each interval without a pong), clients and
servers, both flavours; a ping that gets no pong within ``pong_timeout`` (by default as long
again: 20 s) closes the connection with 1001.

On by default, as in websockets (Dart's default is off): without it, a peer that vanished
without closing (its machine gone, a NAT or proxy that dropped the mapping) leaves the
connection open forever, and a stream waiting for its next message never ends; and many
proxies and NATs drop a connection idle for 60 s or more, which a ping every 20 s keeps
alive. It costs a 6-byte ping and its pong per interval. 20 s for the pong is generous: a
pong queued behind large messages on a slow link still makes it. The price: a consumer that
stops reading for longer than ``ping_interval + pong_timeout`` while its queue is full
(``max_queue``) leaves the pong unread, and is closed too. ``ping_interval=None`` turns
keepalive off."""

DEFAULT_OPEN_TIMEOUT: Final = 10.0
"""Seconds a server gives a client for TLS and its upgrade request."""

DEFAULT_MAX_PENDING_HANDSHAKES: Final = 1024
"""Connections that may be in their opening handshake at once; more are answered 503."""

COMPACT_INTERVAL: Final = 5.0
"""Seconds between the checks that free an idle compressed connection's compressor and
decompressor (about 300 KiB with 32 KiB windows): one idle for a whole interval keeps only
its compression history (at most one window each way), and its next message rebuilds them."""
