"""wschannel under anyio, on its asyncio and trio backends: :func:`connect` and :func:`serve`.

The same client and server as :mod:`wschannel.trio` (see there), on anyio's streams
(:func:`anyio.connect_tcp`, :class:`anyio.streams.tls.TLSStream`,
:func:`anyio.create_tcp_listener`), task groups and cancel scopes. Cancellation is the
backend's (``trio.Cancelled``, or ``asyncio.CancelledError``).
"""

from __future__ import annotations

import contextlib
import socket
import ssl as ssl_module
from typing import Any, cast

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from ._structured import Api, Connect, Serve, Server, ServerChannel, TaskGroup

__all__ = ["Connect", "Serve", "Server", "ServerChannel", "connect", "serve"]


class _Anyio:
    """The :class:`~wschannel._structured.Backend` on anyio."""

    name = "anyio"

    def check_running(self, what: str) -> None:
        try:
            anyio.get_current_task()
        except RuntimeError:  # anyio's NoEventLoopError
            raise RuntimeError(
                f"wschannel.anyio.{what} needs a running event loop (anyio.run, asyncio.run "
                "or trio.run); from synchronous code, use wschannel.sync."
            ) from None

    def cancelled(self) -> type[BaseException]:
        return anyio.get_cancelled_exc_class()

    async def connect_tcp(self, host: str, port: int) -> anyio.abc.SocketStream:
        return await anyio.connect_tcp(host, port)

    async def connect_unix(self, path: str) -> anyio.abc.UNIXSocketStream:
        return await anyio.connect_unix(path)

    async def resolve(self, host: str, port: int) -> str:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return str(infos[0][4][0])

    async def tls_client(
        self, stream: Any, context: ssl_module.SSLContext, hostname: str
    ) -> TLSStream:
        # standard_compatible=False: the WebSocket closing handshake ends the connection, so
        # a peer that closes TCP without TLS's close_notify is not an error.
        return await TLSStream.wrap(
            stream, hostname=hostname, ssl_context=context, standard_compatible=False
        )

    async def tls_server(self, stream: Any, context: ssl_module.SSLContext) -> TLSStream:
        return await TLSStream.wrap(
            stream, server_side=True, ssl_context=context, standard_compatible=False
        )

    async def listen_tcp(
        self, host: str | None, port: int, backlog: int
    ) -> list[anyio.abc.SocketListener]:
        multi = await anyio.create_tcp_listener(local_host=host, local_port=port, backlog=backlog)
        return [
            listener
            for listener in multi.listeners
            if isinstance(listener, anyio.abc.SocketListener)
        ]

    async def accept(self, listener: anyio.abc.SocketListener) -> anyio.abc.SocketStream:
        return await listener.accept()

    def closed_resource(self) -> type[Exception]:
        return anyio.ClosedResourceError

    def local_address(self, listener: anyio.abc.SocketListener) -> Any:
        return listener.extra(anyio.abc.SocketAttribute.local_address)

    def peer_address(self, stream: Any) -> Any:
        return stream.extra(anyio.abc.SocketAttribute.remote_address, None)

    async def receive(self, stream: Any, max_bytes: int) -> bytes | bytearray:
        try:
            data: bytes | bytearray = await stream.receive(max_bytes)
        except anyio.EndOfStream:
            return b""
        return data

    async def send(self, stream: Any, data: bytes) -> None:
        await stream.send(data)

    async def aclose_forcefully(self, resource: Any) -> None:
        await anyio.aclose_forcefully(resource)

    def task_group(self) -> contextlib.AbstractAsyncContextManager[TaskGroup]:
        # anyio's start_soon is typed with TypeVarTuple; it takes what TaskGroup passes.
        return cast("contextlib.AbstractAsyncContextManager[TaskGroup]", anyio.create_task_group())

    def cancel_scope(self, *, shield: bool = False) -> anyio.CancelScope:
        return anyio.CancelScope(shield=shield)

    def move_on_after(self, seconds: float | None) -> anyio.CancelScope:
        return anyio.move_on_after(seconds)

    def event(self) -> anyio.Event:
        return anyio.Event()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


_api = Api(_Anyio())

connect = _api.connect
serve = _api.serve
