"""``serve``: a blocking WebSocket server, one thread per connection, with
``shelf_web_socket``'s rules.

Each accepted connection gets a thread that reads one HTTP upgrade request (RFC 6455 §4.2),
checks it with the engine's :meth:`~wschannel._wschannel.ServerHandshake.check` (not an
upgrade → 404, no version or key → 400, a version other than 13 → 426, an origin not allowed
→ 403), answers 101 with the first subprotocol, in the client's order, that the server
supports and permessage-deflate if both sides want it, then runs ``handler(channel)``. When
the handler returns, the connection is closed with 1000 (1011 if it raised).

At most ``max_pending_handshakes`` connections are in their opening handshake (each in its
thread) at once: while that many are, the server stops accepting, and new connections wait in
the listen backlog (unlike the asyncio server, which answers 503: here refusing would take a
thread too). ``open_timeout`` bounds each handshake.

:meth:`Server.shutdown` stops accepting and closes every open connection with 1001.
:func:`unix_serve` listens on a Unix-domain socket. Connections log to ``wschannel.sync.server``
with ``peer`` and ``connection_id`` in each record, as the asyncio server does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import os
import selectors
import socket
import ssl as ssl_module
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeAlias

from .._fragments import Delivery, in_pieces
from .._message import binary_view
from .._net import Response, deflate_level, deflate_options, format_peer
from .._ping import check_keepalive
from .._wschannel import (
    Connection,
    DeflateOptions,
    HandshakeError,
    Request,
    ServerHandshake,
    encode_shared_frame,
    reject_response,
)
from ..defaults import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PENDING_HANDSHAKES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PING_INTERVAL,
    DEFAULT_WRITE_LIMIT,
)
from ..metrics import (
    OPEN_TIMEOUT,
    PROCESS_REQUEST,
    PROCESS_REQUEST_ERROR,
    ServerMetrics,
    Tally,
    engine_reason,
)
from ..status import ABNORMAL_CLOSURE, GOING_AWAY, INTERNAL_SERVER_ERROR, NORMAL_CLOSURE
from .connection import SyncWebSocketChannel
from .connection import shutdown as shutdown_socket
from .messages import check_max_queue

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Handler", "ProcessRequest", "Server", "ServerChannel", "serve", "unix_serve"]

logger = logging.getLogger("wschannel.sync.server")

Handler: TypeAlias = Callable[["ServerChannel"], object]
"""Called in its own thread with the channel of each new connection; the channel's
:attr:`~ServerChannel.server` is the server (its connections, ``broadcast``)."""

ProcessRequest: TypeAlias = Callable[[Request], Response | None]
"""Looks at the upgrade request first: ``None`` to go on, or a
:data:`~wschannel.server.Response` (status, headers, body) to refuse it."""

_HANDSHAKE_READ_SIZE: Final = 1 << 16

_Socket: TypeAlias = socket.socket  # Server.socket hides the module in the class body

_connection_ids = itertools.count(1)


class _Log(logging.LoggerAdapter[logging.Logger]):
    """One connection's records: ``peer``, ``connection_id`` and ``forwarded_for``."""

    def process(self, msg: object, kwargs: Any) -> tuple[object, Any]:
        kwargs["extra"] = self.extra
        return msg, kwargs


class ServerChannel(SyncWebSocketChannel):
    """The channel a handler of :func:`serve` gets: a
    :class:`~wschannel.sync.SyncWebSocketChannel` that knows the :attr:`server` it came in
    through, so that a handler reaches the other connections without a global."""

    def __init__(
        self, sock: socket.socket, conn: Connection, *, server: Server, **options: Any
    ) -> None:
        """Internal: made by the server for each connection."""
        self._server = server
        super().__init__(sock, conn, **options)

    @property
    def server(self) -> Server:
        """The server that accepted this connection: its :attr:`~Server.connections`,
        :meth:`~Server.broadcast`, :meth:`~Server.shutdown`."""
        return self._server

    @property
    def request(self) -> Request:
        """The HTTP upgrade request that opened the connection: its ``path``, ``headers``
        and ``header(name)``."""
        request = self._request
        assert request is not None  # given by the server
        return request


class Server:
    """A listening WebSocket server, made by :func:`serve`.

    Call :meth:`serve_forever` (in a thread of your choice) to accept connections, and
    :meth:`shutdown` (from another thread) to stop. A context manager: on exit it shuts down.
    """

    def __init__(
        self,
        sock: socket.socket,
        handler: Handler,
        *,
        protocols: Sequence[str],
        allowed_origins: Sequence[str] | None,
        deflate: DeflateOptions | None,
        max_message_size: int | None,
        max_queue: int | None,
        ping_interval: float | None,
        close_timeout: float | None,
        open_timeout: float | None,
        process_request: ProcessRequest | None,
        ssl: ssl_module.SSLContext | None,
        max_header_size: int,
        max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES,
        pong_timeout: float | None = None,
        pieces: bool = False,
    ) -> None:
        if max_pending_handshakes is not None and max_pending_handshakes < 1:
            raise ValueError("max_pending_handshakes must be at least 1, or None.")
        self.handler = handler
        self.protocols = protocols
        self.allowed_origins = allowed_origins
        self.deflate = deflate
        self.max_message_size = max_message_size
        self.max_queue = max_queue
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.close_timeout = close_timeout
        self.open_timeout = open_timeout
        self.process_request = process_request
        self.ssl = ssl
        self.max_header_size = max_header_size
        self.max_pending_handshakes = max_pending_handshakes
        self.pieces = pieces  # delivery="pieces": messages in pieces from the first frame
        self._socket = sock
        self._unix = sock.family == socket.AF_UNIX
        self._port: int = 0 if self._unix else sock.getsockname()[1]
        self._unix_path: str | None = None  # a socket file to remove at shutdown
        self._accepting_paused = False  # max_pending_handshakes reached
        self._lock = threading.Lock()
        self._shutting_down = False
        self._serving = threading.Event()  # set while serve_forever runs
        self._stopped = threading.Event()  # serve_forever has returned
        self._stopped.set()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._threads: set[threading.Thread] = set()
        self._opening: set[socket.socket] = set()  # in their opening handshake
        self._channels: set[ServerChannel] = set()
        # Metrics (with the lock): the totals, and the open channels not yet added to them.
        self._tally = Tally()
        self._metered: set[SyncWebSocketChannel] = set()

    @property
    def socket(self) -> socket.socket:
        """The listening socket."""
        return self._socket

    @property
    def port(self) -> int:
        """The port the server listens on (useful after binding port 0)."""
        if self._unix:
            raise ValueError("A Unix socket server has no port.")
        return self._port

    @property
    def connections(self) -> list[ServerChannel]:
        """The channels of the open connections."""
        with self._lock:
            return [channel for channel in self._channels if not channel.sink.done.done()]

    def broadcast(
        self,
        message: str | Buffer,
        *,
        exclude: SyncWebSocketChannel | Iterable[SyncWebSocketChannel] = (),
    ) -> int:
        """Send ``message`` (``str``: text, bytes-like: binary) to every open connection
        except ``exclude`` (a channel, or several: ``exclude=channel`` in a handler sends to
        the others); returns how many got it. From any thread.

        It never blocks: each message is queued for the connection's writer thread.
        Skipped, and not counted, as :func:`wschannel.broadcast` skips them: connections
        closing (either side), running ``add_stream``, and **slow** ones, whose unsent bytes
        (queued, and held by the kernel because the client is not reading) are over
        :data:`~wschannel.defaults.DEFAULT_WRITE_LIMIT`: a slow client costs at most that
        plus one message. Connections without compression share one encoded frame. Raises
        ``TypeError`` for another message type.
        """
        excluded = {exclude} if isinstance(exclude, SyncWebSocketChannel) else set(exclude)
        return _broadcast(
            [channel for channel in self.connections if channel not in excluded], message
        )

    @property
    def metrics(self) -> ServerMetrics:
        """A snapshot of the server's counters since it started (see
        :class:`~wschannel.metrics.ServerMetrics`); from any thread."""
        with self._lock:
            return self._tally.snapshot([channel._metrics() for channel in self._metered])

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown` is called; each gets a thread."""
        with self._lock:
            if self._shutting_down or self._serving.is_set():
                return
            self._serving.set()
            self._stopped.clear()
        listener = self._socket
        listener.setblocking(False)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(listener, selectors.EVENT_READ)
                selector.register(self._wake_reader, selectors.EVENT_READ)
                listening = True
                while not self._shutting_down:
                    with self._lock:
                        limit = self.max_pending_handshakes
                        full = limit is not None and len(self._opening) >= limit
                        self._accepting_paused = full
                    if full == listening:  # stop or resume accepting (the backlog waits)
                        listening = not full
                        if full:
                            selector.unregister(listener)
                        else:
                            selector.register(listener, selectors.EVENT_READ)
                    for key, _ in selector.select():
                        if key.fileobj is self._wake_reader:
                            self._drain_wakeups()
                        elif key.fileobj is listener and not self._shutting_down:
                            self._accept()
        finally:
            self._serving.clear()
            self._stopped.set()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, close every open connection with 1001 (going away), and wait
        for :meth:`serve_forever` and the connections' threads to finish.

        Connections still in their opening handshake are dropped. Waits at most ``timeout``
        seconds for the connection threads (by default ``close_timeout`` plus a second, as
        a handler that ignores its channel's end could run forever).
        """
        with self._lock:
            first = not self._shutting_down
            self._shutting_down = True
            opening = list(self._opening)
            channels = list(self._channels)
        if first:
            self._wake_writer.send(b"\0")
        self._stopped.wait()
        if first:
            self._socket.close()
            with self._lock:
                self._wake_reader.close()
                self._wake_writer.close()
            if self._unix_path is not None:
                with contextlib.suppress(OSError):
                    os.remove(self._unix_path)
        for sock in opening:
            shutdown_socket(sock, socket.SHUT_RDWR)
        for channel in channels:
            channel.sink.close(GOING_AWAY)
        if timeout is None:
            timeout = (self.close_timeout or 10.0) + 1.0
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        try:
            where = str(self._socket.getsockname())
        except OSError:
            where = "closed"
        return f"<Server {where}>"

    # Metrics.

    def _refused(self, status: int | None, reason: str) -> None:
        with self._lock:
            self._tally.refused(status, reason)

    def _count_closed(self, channel: SyncWebSocketChannel) -> None:
        """The channel is closed: its counts move from the open channels to the totals."""
        with self._lock:
            if channel not in self._metered:
                return
            self._metered.discard(channel)
            counters, high_water = channel._metrics()
            code = channel.close_code
            self._tally.closed(counters, ABNORMAL_CLOSURE if code is None else code, high_water)

    # A connection, in its own thread.

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_reader.recv(4096)

    def _wake_up(self) -> None:
        """A handshake slot is free: let serve_forever accept again (called with the lock)."""
        if self._accepting_paused and not self._shutting_down:
            self._accepting_paused = False
            with contextlib.suppress(OSError):
                self._wake_writer.send(b"\0")

    def _accept(self) -> None:
        try:
            sock, _ = self._socket.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError:
            logger.exception("accept() failed")
            time.sleep(0.01)  # e.g. out of file descriptors: do not spin
            return
        if not self._unix:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(target=self._handle, args=(sock,), daemon=True)
        with self._lock:
            self._threads.add(thread)
            self._opening.add(sock)
        thread.name = f"wschannel-server-handler-{thread.name}"
        thread.start()

    def _handle(self, sock: _Socket) -> None:
        channel = None
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        log = _Log(
            logger,
            {
                "peer": format_peer(peer),
                "connection_id": next(_connection_ids),
                "forwarded_for": None,
            },
        )
        try:
            channel = self._open(sock, log)
            if channel is not None:
                with self._lock:
                    self._channels.add(channel)
                    self._metered.add(channel)
                    self._tally.connections_total += 1
                    shutting_down = self._shutting_down
                opened_channel = channel
                channel.sink.done.add_done_callback(lambda _: self._count_closed(opened_channel))
                if shutting_down:
                    channel.sink.close(GOING_AWAY)
                opened = time.monotonic()
                self._run_handler(channel, log)
                log.info(
                    "Closed with %s %r after %.3f s",
                    channel.close_code,
                    channel.close_reason or "",
                    time.monotonic() - opened,
                )
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
                if channel is not None:
                    self._channels.discard(channel)

    def _open(self, sock: _Socket, log: _Log) -> ServerChannel | None:
        """TLS and the opening handshake (RFC 6455 §4.2), within ``open_timeout``; the
        channel, or ``None`` when the request was refused or the client left (the socket is
        then closed)."""
        deadline = None if self.open_timeout is None else time.monotonic() + self.open_timeout
        channel = None
        try:
            sock.setblocking(True)
            sock.settimeout(self.open_timeout)
            if self.ssl is not None:
                with self._lock:  # the TLS socket takes over the TCP one's descriptor
                    self._opening.discard(sock)
                    sock = self.ssl.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                    self._opening.add(sock)
                try:
                    sock.do_handshake()
                except TimeoutError:
                    self._refused(None, OPEN_TIMEOUT)
                    raise
            channel = self._handshake(sock, deadline, log)
        except Exception as exc:
            log.debug("Opening handshake failed: %r", exc)
        finally:
            with self._lock:
                self._opening.discard(sock)
                self._wake_up()
            if channel is None:
                sock.close()
        return channel

    def _handshake(self, sock: _Socket, deadline: float | None, log: _Log) -> ServerChannel | None:
        """Read the upgrade request and answer it; the channel, or ``None`` if refused."""
        handshake = ServerHandshake(max_header_size=self.max_header_size)
        request = None
        while request is None:
            if deadline is not None:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = sock.recv(_HANDSHAKE_READ_SIZE)
            except TimeoutError:
                self._refused(None, OPEN_TIMEOUT)
                raise
            if not data:
                return None
            try:
                request = handshake.receive_data(data)
            except HandshakeError as exc:
                status = exc.status or 400
                log.info("Refused a request with %d", status)
                self._refused(status, engine_reason(status))
                _reject(sock, status, str(exc))
                return None
        log.extra["forwarded_for"] = request.header("X-Forwarded-For")  # type: ignore[index]
        what = f"{request.method} {request.path}"
        if self.process_request is not None:
            try:
                response = self.process_request(request)
            except Exception:
                log.exception("Error in process_request")
                self._refused(500, PROCESS_REQUEST_ERROR)
                _reject(sock, 500, "Internal Server Error")
                return None
            if response is not None:
                log.info("Refused %s with %d", what, response[0])
                self._refused(response[0], PROCESS_REQUEST)
                _reject(sock, response[0], response[2], response[1])
                return None
        rejection = handshake.check(request, allowed_origins=self.allowed_origins)
        if rejection is not None:
            status, message, headers = rejection
            log.info("Refused %s with %d", what, status)
            self._refused(status, engine_reason(status))
            _reject(sock, status, message, headers)
            return None
        try:
            answer = handshake.accept(request, protocols=self.protocols, deflate=self.deflate)
        except HandshakeError as exc:
            status = exc.status or 400
            log.info("Refused %s with %d", what, status)
            self._refused(status, engine_reason(status))
            _reject(sock, status, str(exc))
            return None
        sock.sendall(answer)
        details = [] if handshake.protocol is None else [f"protocol {handshake.protocol}"]
        if handshake.extensions is not None:
            details.append("compressed")
        log.info("Open %s%s", request.path, f" ({', '.join(details)})" if details else "")
        sock.settimeout(None)
        conn = Connection(
            False,
            max_message_size=self.max_message_size,
            deflate=handshake.extensions,
            deflate_level=deflate_level(self.deflate),
        )
        if self.pieces:  # before the reader thread starts: pieces from the first frame
            conn.set_delivery(True, max_message_size=self.max_message_size)
        return ServerChannel(
            sock,
            conn,
            server=self,
            protocol=handshake.protocol,
            max_queue=self.max_queue,
            ping_interval=self.ping_interval,
            pong_timeout=self.pong_timeout,
            close_timeout=self.close_timeout,
            leftover=request.leftover(),
            request=request,
        )

    def _run_handler(self, channel: ServerChannel, log: _Log) -> None:
        """Run the handler, then close with 1000 (1011 if it raised) and wait until closed."""
        try:
            self.handler(channel)
        except Exception:
            log.exception("Error in a WebSocket connection handler")
            code = INTERNAL_SERVER_ERROR
        else:
            code = NORMAL_CLOSURE
        done = channel.sink.close(code)
        concurrent.futures.wait([done])
        if done.exception() is not None:  # the handler's sink.add_error(): it chose that
            log.debug("The handler ended the connection with an error: %r", done.exception())


def _reject(
    sock: socket.socket, status: int, message: str | bytes, headers: Iterable[tuple[str, str]] = ()
) -> None:
    """Refuse the upgrade with an HTTP response, then close TCP (our side first)."""
    body = message.encode() if isinstance(message, str) else message
    sock.sendall(reject_response(status, list(headers), body))
    shutdown_socket(sock, socket.SHUT_WR)


def _broadcast(channels: Iterable[SyncWebSocketChannel], message: str | Buffer) -> int:
    """:meth:`Server.broadcast` to ``channels``: each message queued for the writer thread."""
    if not isinstance(message, str):
        try:
            memoryview(message)
        except TypeError:
            raise TypeError(
                f"Cannot broadcast {type(message).__name__}: send str (text) or a bytes-like "
                "object (binary)."
            ) from None
    frame: bytes | None = None
    sent = 0
    for channel in channels:
        sink = channel.sink
        if sink._user_closed or sink._disconnected or sink._adding_stream:
            continue
        with channel._lock:  # encoded and queued in the order of the connection's frames
            if sink._disconnected or channel.unsent() > DEFAULT_WRITE_LIMIT:
                continue
            conn = channel._conn
            try:
                if conn.accepts_shared_frames:
                    if frame is None:
                        frame = encode_shared_frame(message)
                    data = frame
                    conn.count_shared_frame(len(frame))
                elif isinstance(message, str):
                    data = conn.send_text(message)
                else:
                    data = conn.send_binary(binary_view(message))
            except RuntimeError:  # its close frame is out
                continue
            channel.write(data)  # the writer thread sends it
        sent += 1
    return sent


def serve(
    handler: Handler,
    host: str | None = None,
    port: int | None = None,
    *,
    protocols: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
    compression: bool | DeflateOptions | None = True,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: int | None = DEFAULT_MAX_QUEUE,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    pong_timeout: float | None = None,
    ssl: ssl_module.SSLContext | None = None,
    process_request: ProcessRequest | None = None,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
    max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES,
    max_header_size: int = 16384,
    sock: socket.socket | None = None,
    reuse_port: bool = False,
    backlog: int = 100,
    delivery: Delivery = "messages",
) -> Server:
    """Listen on ``host``:``port`` and return the :class:`Server`; its
    :meth:`~Server.serve_forever` runs ``handler(channel)`` in a thread per connection.

    ``host=None`` listens on every interface; ``port=None`` or ``0`` picks a free port (see
    :attr:`Server.port`); ``sock`` is an already bound socket to listen on instead. The
    options are :func:`wschannel.serve`'s, with the same defaults:

    - ``protocols``: the subprotocols the server supports; the first one the client offers
      that is here is chosen (the client's order wins, as in ``shelf_web_socket``).
    - ``allowed_origins``: the ``Origin`` values accepted (case-insensitively); another
      origin gets a 403. ``None`` accepts any; requests without ``Origin`` are accepted.
    - ``compression``, ``max_message_size``, ``max_queue``, ``ping_interval``,
      ``pong_timeout``, ``close_timeout``: as for :func:`~wschannel.sync.connect`
      (keepalive is on: a ping every 20 s, 20 s for its pong).
    - ``ssl``: an :class:`ssl.SSLContext` to serve ``wss://``.
    - ``process_request(request)``: return ``None`` to go on, or ``(status, headers,
      body)`` to answer with that instead (e.g. a health check).
    - ``open_timeout``: seconds a client has for TLS and its upgrade request.
    - ``max_pending_handshakes``: connections in their opening handshake at once; while
      that many are, new connections wait in the listen backlog (``backlog`` long).
    - ``delivery``: ``"messages"`` (default), or ``"pieces"``: every connection receives
      messages in pieces from its first frame, so that the connection's reader thread,
      which runs before the handler, never holds a message whole; the handler reads them
      with ``channel.fragments()``. Each message is at most ``max_message_size`` in total
      (``None``: any size).
    """
    in_pieces(delivery)
    check_max_queue(max_queue)
    check_keepalive(ping_interval, pong_timeout)
    if sock is None:
        address = ("" if host is None else host, port or 0)
        if host is None and socket.has_dualstack_ipv6():
            sock = socket.create_server(
                ("::", port or 0),
                family=socket.AF_INET6,
                backlog=backlog,
                reuse_port=reuse_port,
                dualstack_ipv6=True,
            )
        else:
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
            sock = socket.create_server(
                address, family=family, backlog=backlog, reuse_port=reuse_port
            )
    else:
        sock.listen(backlog)
    return _make_server(sock, handler, locals())


def unix_serve(
    handler: Handler,
    path: str | os.PathLike[str] | None = None,
    *,
    protocols: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
    compression: bool | DeflateOptions | None = True,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: int | None = DEFAULT_MAX_QUEUE,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    pong_timeout: float | None = None,
    ssl: ssl_module.SSLContext | None = None,
    process_request: ProcessRequest | None = None,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
    max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES,
    max_header_size: int = 16384,
    sock: socket.socket | None = None,
    backlog: int = 100,
    delivery: Delivery = "messages",
) -> Server:
    """:func:`serve` on a Unix-domain socket at ``path`` (or an already bound ``sock``). A
    stale socket file at ``path`` is replaced; the file is removed at shutdown."""
    in_pieces(delivery)
    check_max_queue(max_queue)
    check_keepalive(ping_interval, pong_timeout)
    unix_path = None
    if sock is None:
        if path is None:
            raise TypeError("unix_serve() needs a path or a sock.")
        unix_path = os.fspath(path)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(unix_path).st_mode):
                os.remove(unix_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(unix_path)
        except OSError:
            sock.close()
            raise
    sock.listen(backlog)
    server = _make_server(sock, handler, locals())
    server._unix_path = unix_path
    return server


def _make_server(sock: socket.socket, handler: Handler, options: dict[str, Any]) -> Server:
    allowed_origins = options["allowed_origins"]
    return Server(
        sock,
        handler,
        protocols=list(options["protocols"] or ()),
        allowed_origins=None if allowed_origins is None else list(allowed_origins),
        deflate=deflate_options(options["compression"], server=True),
        max_message_size=options["max_message_size"],
        max_queue=options["max_queue"],
        ping_interval=options["ping_interval"],
        pong_timeout=options["pong_timeout"],
        close_timeout=options["close_timeout"],
        open_timeout=options["open_timeout"],
        process_request=options["process_request"],
        ssl=options["ssl"],
        max_header_size=options["max_header_size"],
        max_pending_handshakes=options["max_pending_handshakes"],
        pieces=in_pieces(options["delivery"]),
    )
