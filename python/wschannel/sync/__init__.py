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

from .client import connect
from .connection import SyncWebSocketChannel, SyncWebSocketSink
from .messages import SyncMessageStream, SyncStreamSubscription
from .server import Server, serve, unix_serve

__all__ = [
    "Server",
    "SyncMessageStream",
    "SyncStreamSubscription",
    "SyncWebSocketChannel",
    "SyncWebSocketSink",
    "connect",
    "serve",
    "unix_serve",
]
