"""wschannel under trio: :func:`connect` and :func:`serve`, natively.

::

    import trio
    import wschannel.trio


    async def echo(channel: wschannel.trio.ServerChannel) -> None:
        async for message in channel.stream:
            channel.sink.add(message)


    async def main() -> None:
        async with wschannel.trio.serve(echo, "127.0.0.1", 0) as server:
            async with wschannel.trio.connect(f"ws://127.0.0.1:{server.port}/") as channel:
                channel.sink.add("Hello")
                print(await anext(aiter(channel.stream)))


    trio.run(main)

The streams are trio's (:func:`trio.open_tcp_stream`, :class:`trio.SSLStream`,
:func:`trio.open_tcp_listeners`), the opening handshakes and the connection the same engine
as everywhere else (permessage-deflate, keepalive, the close deadline...); the channels are
:class:`~wschannel.bytestream.ByteStreamWebSocketChannel`. The client goes through proxies,
follows redirects and reconnects (``async for channel in connect(url)``) by the rules the
asyncio client follows; under trio, :func:`wschannel.connect` is this :func:`connect`.
Errors are the package's (:class:`~wschannel.WebSocketChannelException`, ``TimeoutError``)
and trio's own (``trio.Cancelled``); nothing of asyncio reaches the caller. The options,
their defaults and what happens on cancellation: :mod:`wschannel._structured` and
docs/client.md ("trio and anyio"). :mod:`wschannel.anyio` is the same for anyio, on its
asyncio and trio backends.
"""

from __future__ import annotations

import contextlib
import ssl as ssl_module
from typing import Any

import trio

from ._structured import Api, Connect, Serve, Server, ServerChannel, TaskGroup

__all__ = ["Connect", "Serve", "Server", "ServerChannel", "connect", "serve"]


class _Trio:
    """The :class:`~wschannel._structured.Backend` on trio."""

    name = "trio"

    def check_running(self, what: str) -> None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            raise RuntimeError(
                f"wschannel.trio.{what} needs trio (trio.run): under asyncio use "
                "wschannel.serve / IOWebSocketChannel.connect, or wschannel.anyio."
            ) from None

    def cancelled(self) -> type[BaseException]:
        return trio.Cancelled

    async def connect_tcp(self, host: str, port: int) -> trio.SocketStream:
        return await trio.open_tcp_stream(host, port)

    async def connect_unix(self, path: str) -> trio.SocketStream:
        return await trio.open_unix_socket(path)

    async def resolve(self, host: str, port: int) -> str:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        return str(infos[0][4][0])

    async def tls_client(
        self, stream: Any, context: ssl_module.SSLContext, hostname: str
    ) -> trio.SSLStream[Any]:
        # https_compatible: the WebSocket closing handshake ends the connection, so a peer
        # that closes TCP without TLS's close_notify is not an error.
        tls = trio.SSLStream(stream, context, server_hostname=hostname, https_compatible=True)
        await tls.do_handshake()
        return tls

    async def tls_server(self, stream: Any, context: ssl_module.SSLContext) -> trio.SSLStream[Any]:
        tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
        await tls.do_handshake()
        return tls

    async def listen_tcp(
        self, host: str | None, port: int, backlog: int
    ) -> list[trio.SocketListener]:
        return await trio.open_tcp_listeners(port, host=host, backlog=backlog)

    async def accept(self, listener: trio.SocketListener) -> trio.SocketStream:
        return await listener.accept()

    def closed_resource(self) -> type[Exception]:
        return trio.ClosedResourceError

    def local_address(self, listener: trio.SocketListener) -> Any:
        return listener.socket.getsockname()

    def peer_address(self, stream: Any) -> Any:
        while isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, trio.SocketStream):
            with contextlib.suppress(OSError):
                return stream.socket.getpeername()
        return None

    async def receive(self, stream: Any, max_bytes: int) -> bytes | bytearray:
        data: bytes | bytearray = await stream.receive_some(max_bytes)
        return data

    async def send(self, stream: Any, data: bytes) -> None:
        await stream.send_all(data)

    async def aclose_forcefully(self, resource: Any) -> None:
        await trio.aclose_forcefully(resource)

    def task_group(self) -> contextlib.AbstractAsyncContextManager[TaskGroup]:
        return trio.open_nursery()

    def cancel_scope(self, *, shield: bool = False) -> trio.CancelScope:
        return trio.CancelScope(shield=shield)

    def move_on_after(self, seconds: float | None) -> trio.CancelScope:
        if seconds is None:
            return trio.CancelScope()
        return trio.move_on_after(seconds)

    def event(self) -> trio.Event:
        return trio.Event()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


_api = Api(_Trio())

connect = _api.connect
serve = _api.serve
