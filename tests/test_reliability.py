"""Hostile, slow and lost peers (docs/reliability.md): each defect an attack found, over real
sockets on 127.0.0.1, with the rule that now holds."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import gc
import socket
import struct
import sys
import termios
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from conftest import (
    SHORT,
    TIMEOUT,
    RawHandler,
    RawServer,
    accept_upgrade,
    close_payload,
    open_raw_client,
    wait,
    wait_until,
)
from sync_helpers import sync_server

import wschannel
import wschannel.sync
from wschannel import status
from wschannel.exceptions import WebSocketConnectionClosed
from wschannel.io import DEFAULT_CONNECT_TIMEOUT, DEFAULT_WRITE_LIMIT, IOWebSocketChannel
from wschannel.server import Server
from wschannel.sync import SyncWebSocketChannel

MASK = b"\x11\x22\x33\x44"

StartRawServer = Callable[[RawHandler], Awaitable[RawServer]]


def header(first: int, length: int, *, masked: bool) -> bytes:
    """A frame header with a 64-bit length (any value, even one RFC 6455 forbids)."""
    mask = 0x80 if masked else 0
    return bytes([first, mask | 127]) + struct.pack("!Q", length) + (MASK if masked else b"")


def masked(payload: bytes) -> bytes:
    return bytes(byte ^ MASK[index % 4] for index, byte in enumerate(payload))


def wrapping_message(*, from_client: bool) -> bytes:
    """Six bytes of a binary message, then a continuation whose length, added to them, wraps
    past 2^64 to 0: it passed the 1 MiB limit, and the peer could stream without end."""
    six = b"abcdef"
    first = bytes([0x02, (0x80 if from_client else 0) | 6])
    first += MASK + masked(six) if from_client else six
    return first + header(0x00, (1 << 64) - 6, masked=from_client)


async def read_frames_until_eof(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """Every frame a server sends (unmasked, any length) until it closes TCP."""
    frames: list[tuple[int, bytes]] = []
    while True:
        try:
            first, second = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
        except asyncio.IncompleteReadError:
            return frames
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        frames.append((first, await reader.readexactly(length)))


# 1. The message size limit could be bypassed by a wrapping length.


@pytest.mark.parametrize("flavour", ["asyncio", "blocking"])
async def test_server_fails_a_message_whose_length_wraps_past_its_limit_with_1002(
    flavour: str,
) -> None:
    received: list[object] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        received.extend([message async for message in channel.stream])

    def sync_handler(channel: SyncWebSocketChannel) -> None:
        received.extend(channel.stream)

    async def attack(port: int) -> list[tuple[int, bytes]]:
        reader, writer = await open_raw_client(port)
        writer.write(wrapping_message(from_client=True))
        try:
            return await read_frames_until_eof(reader)
        finally:
            writer.close()

    if flavour == "asyncio":
        async with wschannel.serve(handler, "127.0.0.1", 0) as server:
            frames = await attack(server.port)
    else:
        with sync_server(sync_handler) as sync:
            frames = await attack(sync.port)
    assert frames == [(0x88, close_payload(1002, "frame length has its most significant bit set"))]
    assert received == []


async def test_asyncio_client_fails_a_message_whose_length_wraps_past_its_limit(
    raw_server: StartRawServer,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(wrapping_message(from_client=False))
        await reader.read()

    server = await raw_server(handler)
    channel = IOWebSocketChannel.connect(server.url)
    assert [message async for message in channel.stream] == []
    assert channel.close_code == status.PROTOCOL_ERROR


def test_blocking_client_fails_a_message_whose_length_wraps_past_its_limit() -> None:
    from sync_helpers import accept_upgrade as sync_accept
    from sync_helpers import drain
    from sync_helpers import raw_server as sync_raw_server

    def handler(sock: socket.socket) -> None:
        sync_accept(sock)
        sock.sendall(wrapping_message(from_client=False))
        drain(sock)

    with sync_raw_server(handler) as server:
        channel = wschannel.sync.connect(server.url)
        assert list(channel.stream) == []
        assert channel.close_code == status.PROTOCOL_ERROR


# 6a. A compressed frame announcing far more than the limit is refused at its header.


async def test_server_refuses_a_compressed_frame_announcing_a_gibibyte_at_its_header() -> None:
    async with wschannel.serve(lambda channel: None, "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert b"permessage-deflate" in head
        started = time.monotonic()
        writer.write(header(0xC2, 1 << 30, masked=True))  # FIN, RSV1, binary: 1 GiB, no data
        frames = await read_frames_until_eof(reader)
        writer.close()
    assert [first for first, _ in frames] == [0x88]
    assert frames[0][1][:2] == (1009).to_bytes(2, "big")
    assert time.monotonic() - started < TIMEOUT


# 2. flush() waited forever once the client was gone.


async def reset(writer: asyncio.StreamWriter) -> None:
    """Close a raw client's socket with an RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize("when", ["before", "while"])
async def test_server_flush_raises_once_a_client_that_stopped_reading_resets(when: str) -> None:
    """The handler fills the buffer of a client that does not read; the client resets, before
    the handler's flush() or while it waits: flush() raises at once, and the handler ends."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[BaseException | None] = loop.create_future()
    filled, gone, flushing = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handler(channel: IOWebSocketChannel) -> None:
        for _ in range(200):
            channel.sink.add(b"x" * 65536)  # 12.5 MiB: more than the kernel's buffers
        filled.set()
        if when == "before":
            await gone.wait()
            await wait_until(lambda: channel.close_code is not None, what="the reset is seen")
            channel.sink.add(b"after")
        flushing.set()
        try:
            await channel.sink.flush()
        except BaseException as exc:
            outcome.set_result(exc)
            raise
        outcome.set_result(None)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        _, writer = await open_raw_client(server.port)
        await wait(filled.wait())
        if when == "while":
            await wait(flushing.wait())  # the handler has set it and now waits in flush()
            assert not outcome.done()
        await reset(writer)
        gone.set()
        error = await asyncio.wait_for(outcome, TIMEOUT)
        assert isinstance(error, WebSocketConnectionClosed)
        assert "closed" in str(error)
        await wait_until(lambda: not server._handlers, what="the handler ended")


async def test_add_stream_ends_quietly_when_the_connection_is_lost_while_it_waits() -> None:
    """add_stream waits in flush() for a client that stopped reading; the client resets: the
    stream ends without an error on done (flush's error only stops the forwarding)."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[BaseException | None] = loop.create_future()

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            yield b"y" * 65536

    async def handler(channel: IOWebSocketChannel) -> None:
        try:
            await channel.sink.add_stream(chunks())
        except BaseException as exc:
            finished.set_result(exc)
            raise
        finished.set_result(None)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        _, writer = await open_raw_client(server.port)
        await wait_until(  # the kernel's buffers are full: add_stream waits in flush()
            lambda: write_backlog(server) > 0, what="the server's writes back up"
        )
        await reset(writer)
        assert await asyncio.wait_for(finished, TIMEOUT) is None


def write_backlog(server: Server) -> int:
    """The bytes waiting in the write buffer of the server's one connection (0 before it
    is open)."""
    if not server.connections:
        return 0
    protocol = server.connections[0]._transport_protocol
    assert protocol is not None and protocol.transport is not None
    return protocol.transport.get_write_buffer_size()


# 3. Memory: an echo server must not hold what a client that never reads makes it send.


def push_until_stuck(
    sock: socket.socket, data: bytes, total: int, patience: float | None = None
) -> int:
    """Send ``data`` repeatedly, up to ``total`` bytes, until the peer takes nothing for
    ``patience`` seconds (by default ``4 * SHORT``); how many bytes it took."""
    if patience is None:
        patience = 4 * SHORT
    sock.setblocking(False)
    sent = 0
    view = memoryview(data)
    offset = 0
    stuck_since = time.monotonic()
    deadline = time.monotonic() + 4 * TIMEOUT
    while sent < total and time.monotonic() < deadline:
        try:
            n = sock.send(view[offset:])
        except BlockingIOError:
            # Whether the peer stopped reading can only be told by time: it took nothing
            # for a while. Meanwhile, the pace of the polls.
            if time.monotonic() - stuck_since > patience:
                break
            time.sleep(0.005)
            continue
        stuck_since = time.monotonic()
        sent += n
        offset = (offset + n) % len(data)
    return sent


def queued(sock: socket.socket, request: int) -> int:
    """The kernel's count of a socket's bytes: ``FIONREAD`` (received, not read) or
    ``TIOCOUTQ`` (written, not yet acknowledged by the peer)."""
    return int.from_bytes(fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"), sys.byteorder)


def tcp_info(sock: socket.socket) -> tuple[bytes, tuple[int, ...]]:
    """The kernel's ``struct tcp_info`` for ``sock``: its eight u8 (state, ca_state,
    retransmits, probes, backoff, options, wscale, flags), then its first 24 u32 (rto, ato,
    snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets, 4 times, pmtu, rcv_ssthresh,
    rtt, rttvar, snd_ssthresh, snd_cwnd, advmss, reordering, rcv_rtt, rcv_space,
    total_retrans)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return info[:8], struct.unpack("=24I", info[8:104])


def stall_report(client: socket.socket, server: socket.socket) -> str:
    """Why bytes stopped going from ``client`` to ``server``: what the server's kernel holds
    unread (the server stopped reading), and the client's retransmissions (the network
    stalled: segments dropped, retransmissions backing off). For a failing assertion."""
    fields = []
    try:
        fields.append(f"unread by the server: {queued(server, termios.FIONREAD)} bytes")
    except OSError as exc:
        fields.append(f"unread by the server: {exc}")
    try:
        u8, u32 = tcp_info(client)
        fields.append(
            f"client: retransmits {u8[2]}, probes {u8[3]}, backoff {u8[4]}, rto {u32[0]} us, "
            f"unacked {u32[4]}, lost {u32[6]}, total retransmitted {u32[23]}"
        )
    except (OSError, struct.error) as exc:
        fields.append(f"client: {exc}")
    try:  # the server's receive side: the window it can offer, and when data last came
        _, u32 = tcp_info(server)
        rcvbuf = server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        fields.append(
            f"server: SO_RCVBUF {rcvbuf}, rcv_ssthresh {u32[14]}, rcv_space {u32[22]}, "
            f"last data received {u32[11]} ms ago"
        )
    except (OSError, struct.error) as exc:
        fields.append(f"server: {exc}")
    return "; ".join(fields)


TCP_RTO_MAX_MS = getattr(socket, "TCP_RTO_MAX_MS", 44)
"""Linux 6.15's socket option for a socket's longest retransmission timeout (1 s at least;
the default is 120 s)."""


def small_buffers(sock: socket.socket) -> None:
    """Keep the attacker's own kernel buffers small, so what the server holds shows; and its
    retransmissions at most 1 s apart.

    Under load a segment can be dropped on loopback several times in a row, and TCP doubles
    the wait before each retransmission: in a CI run (load 8) a client's one lost segment
    was on its 7th try, 26 s apart, and the client had sent nothing more for half the
    test's 40 s, while the server had read all it had been given (nothing unread in its
    kernel). That is the network stalling, not the server. A server that stops reading
    shows differently: its kernel holds what it has not read, and the client waits for a
    window, not for a retransmission."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    with contextlib.suppress(OSError):  # a kernel before 6.15
        sock.setsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS, 1000)


async def raw_client_with_small_buffers(port: int) -> socket.socket:
    sock = socket.socket()
    small_buffers(sock)
    sock.settimeout(TIMEOUT)
    await asyncio.to_thread(sock.connect, ("127.0.0.1", port))
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.to_thread(sock.recv, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


FLOOD = 48 << 20
"""What an attacker tries to push: far more than every kernel buffer on the way can hold."""


ONE_READ = 4 * (256 << 10)
"""What one readable event of a direct socket reads at most (``MAX_READS`` recvs of
``READ_SIZE`` in crates/wschannel-python/src/socket.rs), all handled before the next check of
the write buffer: what a server answers on top of its write limit."""


@pytest.mark.parametrize("what", ["messages", "pings"])
async def test_server_stops_reading_from_a_client_that_sends_but_never_reads(what: str) -> None:
    """An echo server (the guide's handler, no flush) and a client that sends without reading:
    the server's write buffer stays near write_limit and it stops reading, so its process
    takes little more than the kernel's buffers can hold. It used to take all of it (80 MiB
    sent → +77 MiB resident; 64 MiB of pings → +61 MiB of pongs)."""
    largest = 0
    channels: list[IOWebSocketChannel] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        nonlocal largest
        channels.append(channel)
        async for message in channel.stream:
            channel.sink.add(message)
            protocol = channel._transport_protocol
            assert protocol is not None and protocol.transport is not None
            largest = max(largest, protocol.transport.get_write_buffer_size())

    if what == "messages":
        unit = bytes([0x82, 0x80 | 126]) + struct.pack("!H", 8192) + MASK + bytes(8192)
    else:
        unit = bytes([0x89, 0x80 | 125]) + MASK + bytes(125)
    async with wschannel.serve(handler, "127.0.0.1", 0, max_message_size=None) as server:
        sock = await raw_client_with_small_buffers(server.port)
        try:
            sent = await asyncio.to_thread(push_until_stuck, sock, unit, FLOOD)
            transport = channels[0]._transport_protocol.transport  # type: ignore[union-attr]
            await wait_until(
                lambda: not transport.is_reading(),  # type: ignore[union-attr]
                what="the server stopped reading",
            )
            held = transport.get_write_buffer_size()  # type: ignore[union-attr]
            reading = transport.is_reading()  # type: ignore[union-attr]
            # What the client sent that the server's process has not read: in the client's
            # send queue, or in the server's receive queue. The kernel grows a receive
            # buffer that is read fast up to net.ipv4.tcp_rmem's maximum (32 MiB here), so
            # that part may be most of what was sent, and is no memory of the server's.
            server_sock = transport.get_extra_info("socket")  # type: ignore[union-attr]
            in_kernel = queued(sock, termios.TIOCOUTQ) + queued(server_sock, termios.FIONREAD)
        finally:
            sock.close()
    taken = sent - in_kernel
    # The server's process echoed what it took: into its kernel's send buffer (at most
    # net.core.wmem_max, 4 MiB here), the client's receive buffer (64 KiB), its own write
    # buffer and its stream's queue. Without the pause it takes all FLOOD (48 MiB).
    assert taken < FLOOD // 4, f"the server's process took {taken} bytes (sent {sent})"
    assert not reading
    limit = DEFAULT_WRITE_LIMIT
    # What one readable event answered on top of the limit.
    assert held <= limit + ONE_READ, held
    if what == "messages":
        assert largest <= limit + ONE_READ, largest


async def test_blocking_server_answers_only_the_latest_ping_while_its_writes_wait() -> None:
    """A client floods pings and never reads: the blocking server's writer is stuck, and its
    reader (which goes on reading) keeps one pong, not one per ping."""
    channels: list[SyncWebSocketChannel] = []
    opened = threading.Event()

    def handler(channel: SyncWebSocketChannel) -> None:
        # Only the send buffer is made small (the server's writes are to get stuck): its
        # receive buffer shrunk once the connection was open, the kernel dropped segments the
        # client sent in the window it had already been given, and the client's
        # retransmissions backed off (TcpRetransSegs in a network namespace of its own). Under
        # load one run stalled so for its whole 40 s. A server that stops reading still takes
        # at most what its receive buffer had grown to by then, well under 8 MiB.
        channel._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        channels.append(channel)
        opened.set()
        for _ in channel.stream:
            pass

    ping = (bytes([0x89, 0x80 | 125]) + MASK + bytes(125)) * 256  # 256 pings a send
    with sync_server(handler) as sync:
        sock = await raw_client_with_small_buffers(sync.port)
        try:
            assert await asyncio.to_thread(opened.wait, TIMEOUT)
            # The server is to take all of it: no giving up after a short stall. Under load a
            # stall of seconds happened (a CI run; the server's reader had nothing left to
            # read, the client's kernel held the pings back), which says nothing of whether
            # the server goes on reading; a server that stops takes no more than the kernel
            # buffers hold (well under 1 MiB) before the deadline.
            sent = await asyncio.to_thread(push_until_stuck, sock, ping, 8 << 20, 4 * TIMEOUT)
            channel = channels[0]
            stalled = stall_report(sock, channel._sock) if sent < 8 << 20 else ""
            with channel._lock:
                queued = sum(map(len, channel._outgoing)) + len(getattr(channel, "_pong", b""))
        finally:
            sock.close()
    # The reader went on reading the pings (their pongs were dropped).
    assert sent >= 8 << 20, f"the server took {sent} bytes; {stalled}"
    assert queued <= 2 * 127, queued


async def test_client_answers_only_the_latest_ping_while_its_writes_wait() -> None:
    """A server floods pings and does not read: the client (which keeps reading) holds one
    pong, not one per ping; once the server reads, the last pong answers the last ping."""
    count = 200_000  # a pong each would be 2 MB
    flooded, go_on = asyncio.Event(), asyncio.Event()
    pongs: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        for index in range(count):
            writer.write(bytes([0x89, 4]) + index.to_bytes(4, "big"))
            if index % 1000 == 0:
                await writer.drain()
        await writer.drain()
        flooded.set()
        await go_on.wait()
        data = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(1 << 20), TIMEOUT)
            assert chunk, "EOF before the close frame"
            data += chunk
            while len(data) >= 2 and len(data) >= 6 + (data[1] & 0x7F):
                length = data[1] & 0x7F
                mask, payload = data[2:6], data[6 : 6 + length]
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                first, data = data[0], data[6 + length :]
                if first == 0x8A:
                    pongs.append(payload)
                elif first == 0x88:
                    writer.write(bytes([0x88, len(payload)]) + payload)
                    writer.close()
                    return

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # accepted sockets inherit
    server = await asyncio.start_server(handler, sock=listener)
    try:
        port = listener.getsockname()[1]
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{port}", write_limit=1024)
        await wait(channel.ready)
        protocol = channel._transport_protocol
        assert protocol is not None and protocol.transport is not None
        # Small kernel buffers on both ends, so that the pongs back up in the client.
        sock = protocol.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await wait(flooded.wait())
        conn = protocol.conn
        assert conn is not None
        await wait_until(  # every ping has been read (6 bytes each)
            lambda: conn.counters[2] >= 6 * count, what="the client has read every ping"
        )
        held = protocol.transport.get_write_buffer_size()
        # At most the limit and the pongs of one read (256 KiB of pings), not 2 MB.
        assert held <= 1024 + (256 << 10), held
        go_on.set()
        await wait(channel.sink.close(status.NORMAL_CLOSURE))
    finally:
        server.close()
        await server.wait_closed()
    assert pongs, "no pong arrived"
    assert pongs[-1] == (count - 1).to_bytes(4, "big")
    assert len(pongs) < count // 4, len(pongs)


# 4. A graceful close under load threw away what was still queued.


def keep_kernel_buffers_small(channel: IOWebSocketChannel) -> None:
    """So that what waits shows in the connection's own buffers, not the kernel's."""
    protocol = channel._transport_protocol
    assert protocol is not None and protocol.transport is not None
    small_buffers(protocol.transport.get_extra_info("socket"))


@pytest.mark.parametrize("flavour", ["direct", "transport", "blocking"])
async def test_server_close_behind_queued_echoes_reaches_a_slow_but_steady_reader(
    flavour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler echoes 60 messages of 100 KiB and returns (close 1000) while most echoes
    still wait; the client reads 40 a second, much longer than close_timeout: it gets all 60,
    then the close. The close timeout used to start when the close was queued, and dropped the
    queued echoes and the close frame when it fired."""
    if flavour == "transport":
        monkeypatch.setattr("wschannel._direct.ENABLED", False)
    count, size = 60, 100 * 1024

    async def handler(channel: IOWebSocketChannel) -> None:
        keep_kernel_buffers_small(channel)
        index = 0
        async for message in channel.stream:
            channel.sink.add(message)
            index += 1
            if index == count:
                return

    def sync_handler(channel: SyncWebSocketChannel) -> None:
        small_buffers(channel._sock)
        for index, message in enumerate(channel.stream, 1):
            channel.sink.add(message)
            if index == count:
                return

    async def read_slowly(port: int) -> tuple[IOWebSocketChannel, list[bytes], float]:
        channel = IOWebSocketChannel.connect(
            f"ws://127.0.0.1:{port}", max_queue=1, compression=None
        )
        await wait(channel.ready)
        keep_kernel_buffers_small(channel)
        for index in range(count):
            channel.sink.add(index.to_bytes(4, "big") * (size // 4))
        received = []
        started = time.monotonic()
        async for message in channel.stream:
            assert isinstance(message, bytes)
            received.append(message)
            await asyncio.sleep(1 / 40)  # a slow reader on purpose: time is the point
        return channel, received, time.monotonic() - started

    close_timeout = 0.5
    options = {"close_timeout": close_timeout, "compression": None}
    if flavour == "blocking":
        with sync_server(sync_handler, **options) as sync:
            channel, received, took = await read_slowly(sync.port)
    else:
        async with wschannel.serve(handler, "127.0.0.1", 0, **options) as server:  # type: ignore[arg-type]
            channel, received, took = await read_slowly(server.port)
    assert took > 2 * close_timeout  # the reader was slower than the close timeout
    assert [message[:4] for message in received] == [i.to_bytes(4, "big") for i in range(count)]
    assert all(len(message) == size for message in received)
    assert channel.close_code == status.NORMAL_CLOSURE


async def test_server_aborts_a_close_when_the_client_stops_reading_for_close_timeout() -> None:
    """The other half of the rule: a client that takes nothing for close_timeout is cut."""
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[float] = loop.create_future()

    async def handler(channel: IOWebSocketChannel) -> None:
        for _ in range(300):
            channel.sink.add(b"z" * 65536)  # 19 MiB: far more than the kernel's buffers
        started = loop.time()
        await channel.sink.close(status.NORMAL_CLOSURE)
        lost.set_result(loop.time() - started)

    close_timeout = 0.5
    async with wschannel.serve(handler, "127.0.0.1", 0, close_timeout=close_timeout) as server:
        sock = await raw_client_with_small_buffers(server.port)
        try:
            took = await asyncio.wait_for(lost, TIMEOUT)
        finally:
            sock.close()
    assert close_timeout * 0.9 <= took < close_timeout * 2 + SHORT, took


# 6b. Clients had no default open timeout.


def silent_listener() -> socket.socket:
    """Accepts TCP (the kernel does, from the backlog) and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    return listener


async def test_clients_give_up_on_a_silent_server_after_the_default_connect_timeout() -> None:
    """Both clients, with no connect_timeout given, raise TimeoutError after the default
    (10 s, as websockets) against a server that accepts TCP and never answers."""
    with silent_listener() as listener:
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}"
        blocking: dict[str, object] = {}

        def connect_blocking() -> None:
            started = time.monotonic()
            try:
                wschannel.sync.connect(url)
            except BaseException as exc:
                blocking["error"] = exc
            blocking["took"] = time.monotonic() - started

        thread = threading.Thread(target=connect_blocking)
        thread.start()
        started = time.monotonic()
        channel = IOWebSocketChannel.connect(url)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(channel.ready, DEFAULT_CONNECT_TIMEOUT + TIMEOUT)
        took = time.monotonic() - started
        await asyncio.to_thread(thread.join, DEFAULT_CONNECT_TIMEOUT + TIMEOUT)
    assert DEFAULT_CONNECT_TIMEOUT - 0.1 <= took < DEFAULT_CONNECT_TIMEOUT + TIMEOUT
    assert isinstance(blocking.get("error"), TimeoutError), blocking
    assert DEFAULT_CONNECT_TIMEOUT - 0.1 <= blocking["took"] < DEFAULT_CONNECT_TIMEOUT + TIMEOUT  # type: ignore[operator]


# A failing side closed TCP with the peer's data unread: the reset could destroy its close frame.


def read_frames_until_reset_or_eof(sock: socket.socket) -> tuple[list[tuple[int, bytes]], bool]:
    """Every (unmasked) frame the server sent, and whether the connection ended with a reset."""
    sock.setblocking(True)
    sock.settimeout(TIMEOUT)
    data = bytearray()
    reset = False
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            reset = True
            break
        if not chunk:
            break
        data += chunk
    frames = []
    at = 0
    while at + 2 <= len(data):
        length, start = data[at + 1] & 0x7F, at + 2
        if length == 126:
            (length,), start = struct.unpack("!H", data[at + 2 : at + 4]), at + 4
        if start + length > len(data):
            break
        frames.append((data[at], bytes(data[start : start + length])))
        at = start + length
    return frames, reset


@pytest.mark.parametrize("flavour", ["direct", "transport"])
async def test_server_failing_a_client_that_is_still_sending_gets_its_close_frame_through(
    flavour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Echoes wait in the server's kernel (the client does not read yet); then the client
    starts a 2 MiB message and the server fails it with 1009 while the rest still comes. The
    server used to close at once with that data unread: the kernel reset the connection and
    threw away the queued echoes and the close frame, so the client saw a reset, not 1009.
    Now it shuts writing down and reads (dropping it) until the client's EOF."""
    if flavour == "transport":
        monkeypatch.setattr("wschannel._direct.ENABLED", False)

    channels: list[IOWebSocketChannel] = []
    echoed = 0

    async def handler(channel: IOWebSocketChannel) -> None:
        nonlocal echoed
        channels.append(channel)
        async for message in channel.stream:
            channel.sink.add(message)
            echoed += 1

    echoes = 100
    message = bytes([0x82, 0x80 | 126]) + struct.pack("!H", 1024) + MASK + bytes(1024)
    big = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 2 << 20) + MASK + bytes(256 << 10)
    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        sock = await raw_client_with_small_buffers(server.port)
        try:
            await asyncio.to_thread(sock.sendall, message * echoes)
            # Echoed, waiting for the client to read.
            await wait_until(lambda: echoed == echoes, what="every message is echoed")
            sock.settimeout(SHORT)  # once the server stops reading, give up the rest after SHORT
            with contextlib.suppress(OSError):  # the server may stop reading first
                await asyncio.to_thread(sock.sendall, big)
            await wait_until(
                lambda: channels[0].close_code is not None, what="the server failed the message"
            )
            frames, reset = await asyncio.to_thread(read_frames_until_reset_or_eof, sock)
        finally:
            sock.close()
    assert not reset
    assert [first for first, _ in frames] == [0x82] * echoes + [0x88]
    assert frames[-1][1][:2] == (1009).to_bytes(2, "big")


# Closed connections waited for the cyclic garbage collector to free their compression state.


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_in_use() -> int | None:
    """Bytes the C heap has handed out (glibc's mallinfo2), or None without glibc."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


async def test_closed_compressed_connections_free_their_memory_without_the_collector() -> None:
    """With the cyclic garbage collector off, 40 compressed connections that exchanged a
    message and closed leave almost nothing behind. Their protocol, channel, transport and
    engine refer to each other, so the engine's compression state (300-550 KiB a side) used
    to wait for a full collection: the soak's heap swung by 190 MiB."""
    if heap_in_use() is None:
        pytest.skip("needs glibc's mallinfo2")
    count = 40
    gc.collect()
    gc.disable()
    try:
        async with wschannel.serve(_echo, "127.0.0.1", 0, compression=True) as server:
            url = f"ws://127.0.0.1:{server.port}"
            before = heap_in_use()
            for index in range(count):
                channel = IOWebSocketChannel.connect(url, compression=True)
                channel.sink.add(f"message {index} " * 100)
                assert await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT)
                await wait(channel.sink.close(status.NORMAL_CLOSURE))
            await wait_until(lambda: not server._connections, what="every connection is gone")
            after = heap_in_use()
    finally:
        gc.enable()
    assert before is not None and after is not None
    held = (after - before) / count
    assert held < 48 * 1024, f"{held / 1024:.0f} KiB per closed connection"


async def _echo(channel: IOWebSocketChannel) -> None:
    async for message in channel.stream:
        channel.sink.add(message)
