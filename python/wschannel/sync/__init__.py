"""Blocking WebSocket client and server, for threads: the same channel and sink shape as the
asyncio API, with blocking calls in place of awaitables.

.. code-block:: python

    import wschannel.sync

    with wschannel.sync.connect("ws://localhost:1234") as channel:
        channel.sink.add("hello")
        for message in channel.stream:
            print(message)

Each connection has a reader thread (it feeds the engine and never writes) and a writer
thread (the engine's replies and close frames); ``sink.add`` writes from the calling thread;
one timer thread per process runs keepalive and close timeouts. See
:mod:`wschannel.sync.connection` for why this cannot deadlock when both directions are full.
"""

from __future__ import annotations

from .._reconnect import reconnecting
from .client import connect
from .connection import SyncWebSocketChannel, SyncWebSocketSink
from .messages import SyncMessageStream, SyncStreamSubscription
from .server import Server, serve, unix_serve

reconnect = reconnecting(connect)
reconnect.__name__ = reconnect.__qualname__ = "reconnect"
reconnect.__doc__ = """``for channel in wschannel.sync.reconnect(url, **options):`` as
``for channel in wschannel.sync.connect(url, **options)`` (the same options, see
:func:`connect`), but the first attempt is made when the iteration starts and retried as the
later ones: for a program that may start before its server. Each channel is open; each time
the loop comes back, the previous one is closed (1000 if still open) and a new connection
made, after a delay (``reconnect_delays``, :func:`wschannel.backoff`) when one is lost or an
attempt fails with what may pass (the network, a timeout, 5xx, 429 with its Retry-After).
Another error is raised, as is the last one when the delays run out."""

__all__ = [
    "Server",
    "SyncMessageStream",
    "SyncStreamSubscription",
    "SyncWebSocketChannel",
    "SyncWebSocketSink",
    "connect",
    "reconnect",
    "serve",
    "unix_serve",
]
