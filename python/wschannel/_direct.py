"""Direct socket I/O for open plain connections: the engine reads and writes the socket.

Once the opening handshake is over, a connection over plain TCP or a Unix socket leaves its
asyncio transport: :func:`take_over` moves the socket to a :class:`DirectTransport`, which
registers the socket with the event loop (``loop.add_reader``/``add_writer``) and lets the
compiled ``SocketIO`` do the ``recv`` and ``sendmsg`` calls. A read goes from the kernel
straight into the engine (no ``bytes`` per read), a message goes from the caller's buffer
straight to the kernel (one call from ``sink.add``), and what the kernel cannot take waits in
a queue of chunks, not in one ``bytearray`` that is copied as it grows. On this machine that
is about 2.5x the round trips per CPU second of the stdlib transport (see
docs/performance.md).

A ``wss://`` connection whose TLS settings map to rustls (``_tls``) is a DirectTransport from
the start: :func:`connect_tls` and :func:`accept_tls` take the connected socket, the TLS
handshake runs in the engine (``SocketIO.tls_client``/``tls_server``), the opening handshake
reads plaintext (``receive_plain``) and the open connection is read and written as a plain
one, rustls encrypting on the way. Other TLS connections, event loops without
``add_reader`` (Windows' proactor) and connections whose transport still holds unsent bytes
keep their asyncio transport. ``WSCHANNEL_DIRECT_IO=0`` in the environment turns this off (to
compare, or to rule it out).

``DirectTransport`` implements the part of :class:`asyncio.Transport` that the protocol in
:mod:`wschannel.io` uses, with the same semantics: ``close()`` sends what is queued, then
closes; ``abort()`` drops it; ``pause_writing``/``resume_writing`` at the write limits;
``eof_received`` then ``connection_lost``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from ._driver import HANDLING_FAILED

if TYPE_CHECKING:
    from ._wschannel import (
        Close,
        Connection,
        Failure,
        Fragment,
        Ping,
        Pong,
        SocketIO,
        TlsClientConfig,
        TlsServerConfig,
    )

    Event = str | bytes | Fragment | Ping | Pong | Close | Failure
else:
    try:
        from ._wschannel import SocketIO
    except ImportError:  # not on this platform (Windows)
        SocketIO = None

__all__ = ["DirectTransport", "accept_tls", "connect_tls", "supports_tls", "take_over"]

ENABLED = SocketIO is not None and os.environ.get("WSCHANNEL_DIRECT_IO", "1") != "0"


class _Protocol(Protocol):
    """What a DirectTransport calls on its protocol."""

    def events_received(self, events: list[Event]) -> None: ...
    def eof_received(self) -> bool | None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class _Detached(asyncio.Protocol):
    """The old transport's protocol once the socket has moved: hears nothing more."""


def _supports_readers(loop: asyncio.AbstractEventLoop) -> bool:
    if isinstance(loop, asyncio.SelectorEventLoop):
        return True
    return type(loop).__module__.partition(".")[0] == "uvloop"


def supports_tls(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether a TLS connection on ``loop`` can take the direct path."""
    return ENABLED and _supports_readers(loop)


def _own_socket(transport: asyncio.Transport) -> socket.socket | None:
    """A duplicate of a fresh transport's socket, non-blocking, or None when it has none
    usable; the transport is then aborted (closing only its own descriptor)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        return None
    own = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
    own.setblocking(False)
    transport.set_protocol(_Detached())
    transport.abort()
    return own


async def connect_tls(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.BaseTransport,
    config: TlsClientConfig,
    server_hostname: str,
) -> DirectTransport | None:
    """The TLS handshake, in the engine, over a just-connected plain ``transport`` (which
    is aborted: the socket moves to the returned DirectTransport). None (socket closed) when
    the server asks for a client certificate, or ``server_hostname`` is not a name rustls
    can check: connect again with Python's ``ssl``, which presents the context's
    certificate if it has one. Raises ``ssl.SSLError`` or ``OSError`` if the
    handshake fails; connect the returned transport to its protocol with :meth:`start`."""
    extra = {name: transport.get_extra_info(name) for name in ("peername", "sockname")}
    sock = _own_socket(cast("asyncio.Transport", transport))
    if sock is None:
        raise OSError("wschannel: no socket to run TLS on")
    direct = None
    try:
        direct = DirectTransport(loop, sock, None, None, 65536, extra)
        try:
            io = SocketIO.tls_client(sock.fileno(), config, server_hostname, direct._wake)
        except ValueError:  # a name rustls cannot check a certificate against: ssl's turn
            sock.close()
            return None
        direct._start_tls(io)
        if not await direct._handshake:
            direct.abort()
            return None
    except BaseException:
        if direct is not None and hasattr(direct, "_io"):
            direct.abort()
        else:
            sock.close()
        raise
    return direct


def accept_tls(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.BaseTransport,
    config: TlsServerConfig,
    done: Callable[[DirectTransport, BaseException | None], None],
) -> DirectTransport | None:
    """The TLS handshake, in the engine, over a just-accepted plain ``transport`` (aborted:
    the socket moves to the returned DirectTransport); ``done(transport, error)`` once it is
    over, then connect the transport to its protocol with :meth:`start`. None if the
    transport has no socket to take (it is then left as it is)."""
    extra = {name: transport.get_extra_info(name) for name in ("peername", "sockname")}
    sock = _own_socket(cast("asyncio.Transport", transport))
    if sock is None:
        return None
    try:
        direct = DirectTransport(loop, sock, None, None, 65536, extra)
        direct._start_tls(SocketIO.tls_server(sock.fileno(), config, direct._wake))
    except BaseException:
        sock.close()
        raise

    def finished(handshake: asyncio.Future[bool]) -> None:
        error = None if handshake.cancelled() else handshake.exception()
        done(direct, error)

    direct._handshake.add_done_callback(finished)
    return direct


def take_over(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    protocol: _Protocol,
    conn: Connection,
    write_limit: int,
) -> DirectTransport | None:
    """Move an open connection's socket from ``transport`` to a DirectTransport, if it can.

    The socket is duplicated and the transport aborted, which closes only its own descriptor:
    the connection lives on in the duplicate. Returns None (and changes nothing) when the
    connection must stay on its transport.
    """
    if isinstance(transport, DirectTransport):  # TLS in the engine: only the reads change
        transport._attach(conn)
        return transport
    if not ENABLED or not _supports_readers(loop):
        return None
    if transport.get_extra_info("ssl_object") is not None or transport.is_closing():
        return None
    if transport.get_write_buffer_size():
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        return None
    extra = {name: transport.get_extra_info(name) for name in ("peername", "sockname")}
    try:
        fd = os.dup(sock.fileno())
    except OSError:  # out of descriptors: the transport goes on serving the connection
        return None
    own = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
    extra["socket"] = own
    try:
        own.setblocking(False)
        direct = DirectTransport(loop, own, protocol, conn, write_limit, extra)
    except BaseException:
        own.close()
        raise
    # Only now, with the new transport reading: the old one hands over without a word.
    transport.set_protocol(_Detached())
    transport.abort()
    return direct


class DirectTransport:
    """An open connection's socket, read and written by the engine on readiness callbacks."""

    __slots__ = (
        "_closing",
        "_extra",
        "_fd",
        "_handshake",
        "_io",
        "_loop",
        "_lost",
        "_low",
        "_paused",
        "_protocol",
        "_reader",
        "_reading",
        "_sock",
        "_tls",
        "_write_eof",
        "_writing",
        "send_binary",
        "send_text",
        "uncork",
    )

    #: Encode and send a message: ``sink.add``'s fast path.
    send_text: Callable[[str], None]
    send_binary: Callable[[Any], None]
    #: Send what was gathered now.
    uncork: Callable[[], None]

    _protocol: _Protocol
    _handshake: asyncio.Future[bool]

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: _Protocol | None,
        conn: Connection | None,
        write_limit: int,
        extra: dict[str, Any],
    ) -> None:
        """A plain connection's transport (``protocol`` and ``conn`` given), or, with both
        None, one for :func:`connect_tls` and :func:`accept_tls` to set up."""
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        extra["socket"] = sock
        self._extra = extra
        self._reader = self._read_ready
        self._tls = False
        self._low = write_limit // 4
        if protocol is None or conn is None:
            self._closing = self._lost = self._reading = self._writing = False
            self._write_eof = self._paused = False
            return
        self._protocol = protocol
        self._setup(SocketIO(self._fd, conn, self._wake, high=write_limit))
        self.resume_reading()

    def _setup(self, io: SocketIO) -> None:
        loop = self._loop
        self._io = io
        self._closing = False  # close() or abort() called
        self._write_eof = False  # write_eof() called: shut writing down once the queue is empty
        self._lost = False  # connection_lost scheduled
        self._paused = False  # the protocol's writing is paused
        self._reading = False
        self._writing = False  # a writer is registered
        # A task's burst of sends is gathered and sent at the loop's next turn (or when the
        # stream's consumer waits for a message, whichever is first).
        io.defer = functools.partial(loop.call_soon, io.uncork)
        self.send_text = io.send_text
        self.send_binary = io.send_binary
        self.uncork = io.uncork

    # TLS in the engine: the handshake, the opening handshake's plaintext, then the engine.

    def _start_tls(self, io: SocketIO) -> None:
        self._tls = True
        self._setup(io)
        self._handshake = self._loop.create_future()
        self._reader = self._read_ready_handshake
        self._read_ready_handshake()  # sends the ClientHello (clients)
        if not self._handshake.done():
            self.resume_reading()

    def start(self, protocol: asyncio.BaseProtocol) -> None:
        """After the TLS handshake: ``protocol`` gets ``connection_made`` and, from then
        on, what is read as ``data_received``, until the opening handshake attaches the
        engine's connection (:func:`take_over`)."""
        self._protocol = cast("_Protocol", protocol)
        self._reader = self._read_ready_plain
        agreed = self._io.tls_version
        if agreed is not None:  # as ssl's SSLObject.cipher(): (name, version, secret bits)
            version, suite = agreed
            bits = 128 if "128" in suite else 256
            self._extra["cipher"] = (suite, version, bits)
        protocol.connection_made(cast("asyncio.Transport", self))
        if not self._closing:
            self.resume_reading()
            self._read_ready_plain()  # what came with the end of the handshake

    def _attach(self, conn: Connection) -> None:
        self._io.attach(conn)
        self._reader = self._read_ready_tls
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._loop.add_reader(self._fd, self._reader)

    def _read_ready_handshake(self) -> None:
        try:
            state = self._io.handshake()
        except OSError as exc:  # ssl.SSLError is one
            self._end_handshake(exc)
            return
        if state:
            self._end_handshake(None if state == 1 else False)

    def _end_handshake(self, outcome: Exception | bool | None) -> None:
        """The handshake is over: done (None), failed (the error), or to be made again
        with Python's ``ssl`` (False)."""
        self.pause_reading()
        waiter = self._handshake
        if waiter.done():
            return
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
            self.abort()
        else:
            waiter.set_result(outcome is None)

    def _read_ready_plain(self) -> None:
        try:
            data = self._io.receive_plain()
        except OSError as exc:
            self._schedule_lost(exc)
            return
        if data is None:
            self._eof()
            return
        if data:
            self._protocol.data_received(data)  # type: ignore[attr-defined]
        if self._io.peer_closed and not self._lost:
            self._eof()

    def _read_ready_tls(self) -> None:
        try:
            events = self._io.receive()
        except OSError as exc:
            self._schedule_lost(exc)
            return
        if events:
            self._deliver(events)
        else:
            self._io.uncork()  # what rustls answered, if anything
        if (events is None or self._io.peer_closed) and not self._lost:
            self._eof()

    # The asyncio.Transport methods the protocol uses.

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        high = 65536 if high is None else high
        self._io.high = high
        self._low = high // 4 if low is None else low

    def get_write_buffer_size(self) -> int:
        return self._io.pending

    @property
    def high_water(self) -> int:
        """The most bytes that have waited for the socket at once (for metrics)."""
        return self._io.high_water

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._reader)

    def write(self, data: bytes) -> None:
        if not self._lost:
            self._io.send(data)

    def write_shared(self, frame: bytes) -> None:
        """Write a broadcast's frame (from ``encode_shared_frame``), counted in the
        connection as one message sent; like :meth:`write`, but not held for the loop's next
        turn (behind what is)."""
        if not self._lost:
            self._io.send_shared(frame)

    def can_write_eof(self) -> bool:
        return not self._tls  # as asyncio's TLS transport: no half-close under TLS

    def write_eof(self) -> None:
        """Send what is queued, then shut writing down (a FIN); reading goes on."""
        if self._write_eof or self._closing:
            return
        self._write_eof = True
        self._io.uncork()
        if not self._io.pending:
            self._shut_down_writing()

    def _shut_down_writing(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the peer is gone: so is the connection
            self._schedule_lost(exc)

    def close(self) -> None:
        """Stop reading, send what is queued, then close the socket."""
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        self._io.uncork()
        if self._tls and self._reader != self._read_ready_handshake:
            self._io.close_notify()  # the TLS session ends cleanly, behind what is queued
        if not self._io.pending:
            self._schedule_lost(None)

    def abort(self) -> None:
        """Close the socket now, dropping what is queued."""
        self._closing = True
        self._schedule_lost(None)

    # Readiness callbacks.

    def _read_ready(self) -> None:
        try:
            events = self._io.receive()
        except OSError as exc:
            self._schedule_lost(exc)
            return
        if events is None:
            self._eof()
        elif events:  # as _deliver, inline: this is once per read
            try:
                self._protocol.events_received(events)
            except Exception as exc:
                self._handling_failed(exc)
            finally:
                self._io.uncork()  # what handling them sent goes out in one sendmsg

    def _handling_failed(self, exc: Exception) -> None:
        """A bug in handling received events: fail the connection, as asyncio's transport
        does."""
        self._loop.call_exception_handler(
            {
                "message": HANDLING_FAILED,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            }
        )
        self.abort()

    def _deliver(self, events: list[Event]) -> None:
        """Hands a read's events to the protocol, then sends what handling them sent."""
        if events:
            try:
                self._protocol.events_received(events)
            except Exception as exc:
                self._handling_failed(exc)
            finally:
                self._io.uncork()  # what handling them sent goes out in one sendmsg

    def _eof(self) -> None:
        self.pause_reading()
        if not self._protocol.eof_received():
            self.close()

    def _wake(self) -> None:
        """From SocketIO: the queue stopped being empty or passed the limit, or a write failed."""
        error = self._io.take_error()
        if error is not None:
            self._schedule_lost(error)
            return
        if not self._writing and not self._lost:
            self._writing = True
            self._loop.add_writer(self._fd, self._write_ready)
        if not self._paused and self._io.pending > self._io.high:
            self._paused = True
            self._protocol.pause_writing()

    def _write_ready(self) -> None:
        try:
            pending = self._io.flush()
        except OSError as exc:
            self._schedule_lost(exc)
            return
        if self._paused and pending <= self._low:
            self._paused = False
            self._protocol.resume_writing()
        if not pending and self._closing:
            self._io.uncork()  # written after close(): goes out before the socket closes
            pending = self._io.pending
        if not pending:
            self._writing = False
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._schedule_lost(None)
            elif self._write_eof:
                self._shut_down_writing()

    # The end.

    def _schedule_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        if self._tls and not self._handshake.done():
            self._handshake.set_exception(exc or ConnectionResetError("TLS handshake aborted"))
        self._lost = self._closing = True
        self.pause_reading()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        self._io.discard()
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        try:
            protocol = getattr(self, "_protocol", None)
            if protocol is not None:
                protocol.connection_lost(exc)
        finally:
            self._sock.close()
