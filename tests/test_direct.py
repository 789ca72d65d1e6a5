"""Direct socket I/O (wschannel._direct): open plain connections leave their asyncio transport.

Every other asyncio test runs over direct I/O too (it is the default for plain TCP and Unix
sockets); these check the hand-over itself, the cases that keep the asyncio transport, the
write queue under backpressure, and a peer that goes away mid-write.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme
from conftest import (
    SHORT,
    TIMEOUT,
    RawHandler,
    RawServer,
    accept_upgrade,
    frame,
    open_raw_client,
    read_frame,
    wait,
    wait_until,
)

import wschannel
from wschannel import status
from wschannel._direct import DirectTransport
from wschannel._driver import HANDLING_FAILED
from wschannel._stream import StreamSubscription
from wschannel.io import IOWebSocketChannel

StartRaw = Callable[[RawHandler], Awaitable[RawServer]]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="direct I/O is Unix only")

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 3 << 20]


def transport_of(channel: IOWebSocketChannel) -> object:
    protocol = channel._transport_protocol
    assert protocol is not None
    return protocol.transport


async def echo_every_size(channel: IOWebSocketChannel) -> None:
    """Send a text and a binary message of every size, and check each echo byte for byte."""
    stream = aiter(channel.stream)
    for size in SIZES:
        binary = os.urandom(size)
        text = "é" * (size // 2)
        channel.sink.add(binary)
        channel.sink.add(text)
        assert await asyncio.wait_for(anext(stream), TIMEOUT) == binary
        assert await asyncio.wait_for(anext(stream), TIMEOUT) == text


async def test_plain_tcp_connections_use_direct_io_on_both_sides() -> None:
    server_channels: list[IOWebSocketChannel] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        server_channels.append(channel)
        channel.stream.listen(channel.sink.add)
        await channel.sink.done

    async with wschannel.serve(
        handler, "127.0.0.1", 0, max_message_size=None, compression=None
    ) as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with IOWebSocketChannel.connect(
            url, max_message_size=None, compression=None
        ) as channel:
            await wait(channel.ready)
            assert isinstance(transport_of(channel), DirectTransport)
            await echo_every_size(channel)
            assert isinstance(transport_of(server_channels[0]), DirectTransport)
            peer = transport_of(channel).get_extra_info("peername")  # type: ignore[attr-defined]
            assert peer[1] == server.port
            await wait(channel.sink.close(status.NORMAL_CLOSURE, "done"))
    assert (channel.close_code, channel.close_reason) == (status.NORMAL_CLOSURE, "done")
    await wait(server_channels[0].sink.done)
    assert server_channels[0].close_code == status.NORMAL_CLOSURE
    assert server_channels[0].close_reason == "done"


async def test_compressed_connections_use_direct_io() -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        channel.stream.listen(channel.sink.add)
        await channel.sink.done

    async with wschannel.serve(handler, "127.0.0.1", 0, max_message_size=None) as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with IOWebSocketChannel.connect(url, max_message_size=None) as channel:
            await wait(channel.ready)
            assert isinstance(transport_of(channel), DirectTransport)
            await echo_every_size(channel)


async def test_unix_socket_connections_use_direct_io(tmp_path: Path) -> None:
    path = str(tmp_path / "ws.sock")

    async def handler(channel: IOWebSocketChannel) -> None:
        channel.stream.listen(channel.sink.add)
        await channel.sink.done

    async with (
        wschannel.unix_serve(handler, path, max_message_size=None),
        IOWebSocketChannel.connect(
            "ws://localhost/", unix_socket=path, max_message_size=None
        ) as channel,
    ):
        await wait(channel.ready)
        assert isinstance(transport_of(channel), DirectTransport)
        await echo_every_size(channel)


async def test_tls_with_python_ssl_keeps_its_asyncio_transport() -> None:
    """A server given an ``ssl.SSLContext`` keeps asyncio's ssl transport, and so does a
    client whose context cannot be mapped to rustls (no host name check); a client whose
    context verifies as rustls does takes the direct path (TLS in the engine)."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    unchecked = ssl.create_default_context()
    authority.configure_trust(unchecked)
    unchecked.check_hostname = False

    async def handler(channel: IOWebSocketChannel) -> None:
        assert not isinstance(transport_of(channel), DirectTransport)
        channel.stream.listen(channel.sink.add)
        await channel.sink.done

    async with wschannel.serve(
        handler, "127.0.0.1", 0, ssl=server_context, max_message_size=None
    ) as server:
        url = f"wss://127.0.0.1:{server.port}"
        for context, direct in ((client_context, True), (unchecked, False)):
            async with IOWebSocketChannel.connect(
                url, ssl=context, max_message_size=None
            ) as channel:
                await wait(channel.ready)
                transport = transport_of(channel)
                assert isinstance(transport, DirectTransport) is direct
                ssl_object = transport.get_extra_info("ssl_object")  # type: ignore[attr-defined]
                assert (ssl_object is None) is direct
                await echo_every_size(channel)


_SWITCHED_OFF = """
import asyncio, wschannel
from wschannel.io import IOWebSocketChannel

async def main():
    async def handler(channel):
        channel.stream.listen(channel.sink.add)
        await channel.sink.done
    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        async with IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}") as channel:
            channel.sink.add("over asyncio")
            echo = await anext(aiter(channel.stream))
            print(type(channel._transport_protocol.transport).__name__, echo)

asyncio.run(main())
"""


def test_direct_io_can_be_switched_off_from_the_environment() -> None:
    env = {**os.environ, "WSCHANNEL_DIRECT_IO": "0"}
    result = subprocess.run(
        [sys.executable, "-c", _SWITCHED_OFF],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
        check=True,
    )
    name, echo = result.stdout.split(" ", 1)
    assert name != "DirectTransport"
    assert echo.strip() == "over asyncio"


async def test_a_backed_up_write_queue_pauses_flush_and_delivers_everything_in_order() -> None:
    """The server does not read for a while: the client's messages wait in its queue."""
    release = asyncio.Event()
    received: list[bytes] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        await release.wait()
        async for message in channel.stream:
            assert isinstance(message, bytes)
            received.append(message)

    messages = [bytes([i]) * (1 << 20) + os.urandom(17) for i in range(24)]
    async with wschannel.serve(
        handler, "127.0.0.1", 0, max_message_size=None, max_queue=1, compression=None
    ) as server:
        url = f"ws://127.0.0.1:{server.port}"
        channel = IOWebSocketChannel.connect(url, max_message_size=None, compression=None)
        await wait(channel.ready)
        transport = transport_of(channel)
        assert isinstance(transport, DirectTransport)
        for message in messages:
            channel.sink.add(message)
        # 24 MiB do not fit in the kernel's buffers while nobody reads.
        assert transport.get_write_buffer_size() > 1 << 20
        flushed = asyncio.ensure_future(channel.sink.flush())
        # Nothing happens while the server does not read: time is the point here.
        await asyncio.sleep(SHORT)
        assert not flushed.done()
        release.set()
        await wait(flushed)
        await wait(channel.sink.close())
        await wait_until(lambda: len(received) == len(messages), what="the server has them all")
    assert received == messages
    assert transport.get_write_buffer_size() == 0


async def test_a_backed_up_server_queue_keeps_bytes_by_reference_and_copies_mutable_buffers() -> (
    None
):
    """While the client does not read, the server's frames wait in its queue: a large
    ``bytes`` as a reference to it (no copy), a ``bytearray`` as a copy (the caller may
    change it at once), a broadcast's shared frame as a reference; all arrive intact."""
    start_reading = asyncio.Event()
    expected: list[bytes] = []
    queued_by_reference: list[bool] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        transport = transport_of(channel)
        assert isinstance(transport, DirectTransport)
        for index in range(24):  # 26 MiB: more than the kernel's buffers hold
            message = bytes([index]) * (1 << 20) + os.urandom(9)
            before = sys.getrefcount(message)
            channel.sink.add(message)
            # Once the kernel's buffers are full, the queue holds the message itself.
            queued_by_reference.append(sys.getrefcount(message) > before)
            expected.append(message)
            buffer = bytearray(os.urandom(100_000))
            snapshot = bytes(buffer)
            channel.sink.add(buffer)
            buffer[:] = bytes(len(buffer))  # changed at once: the queued copy is not
            expected.append(snapshot)
        shared = os.urandom(300_000)
        assert wschannel.broadcast([channel], shared) == 1
        expected.append(shared)
        assert transport.get_write_buffer_size() > 1 << 20
        start_reading.set()
        await wait_until(  # the client reads: the queue drains
            lambda: transport.get_write_buffer_size() == 0, what="the write queue drained"
        )
        await channel.sink.close()

    # A write limit above what is queued, so that broadcast() does not skip the connection.
    async with wschannel.serve(
        handler, "127.0.0.1", 0, compression=None, max_message_size=None, write_limit=1 << 26
    ) as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with IOWebSocketChannel.connect(
            url, compression=None, max_message_size=None
        ) as channel:
            await asyncio.wait_for(start_reading.wait(), TIMEOUT)
            received = [message async for message in channel.stream]
    assert len(received) == len(expected)
    assert received == expected
    assert queued_by_reference[-1]  # by the last one the queue had backed up


async def test_a_peer_reset_while_writing_loses_the_connection(raw_server: StartRaw) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        await reader.readexactly(1 << 16)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url, compression=None)
    assert isinstance(transport_of(channel), DirectTransport)
    chunk = b"x" * (1 << 20)
    for _ in range(int(TIMEOUT / SHORT)):
        if channel.close_code is not None:
            break
        channel.sink.add(chunk)  # never raises: a lost connection drops what is sent
        await asyncio.sleep(SHORT / 10)  # the pace of the writes, until the reset is seen
    await wait(channel.sink.done)
    assert channel.close_code == status.ABNORMAL_CLOSURE
    assert transport_of(channel).get_write_buffer_size() == 0  # type: ignore[attr-defined]


async def test_a_peer_that_closes_tcp_without_a_close_frame_ends_the_stream(
    raw_server: StartRaw,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(b"\x82\x03abc")  # one binary message, then EOF
        await writer.drain()

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url)
    assert isinstance(transport_of(channel), DirectTransport)
    assert [message async for message in channel.stream] == [b"abc"]
    assert channel.close_code == status.ABNORMAL_CLOSURE
    await wait(channel.sink.done)


async def test_answers_to_a_batch_keep_their_order_across_the_gathering_limit() -> None:
    """The answers to one read's messages are gathered and sent together (64 KiB at most at
    a time): small and large answers, sent twice each, arrive complete and in order."""

    async def handler(channel: IOWebSocketChannel) -> None:
        def twice(message: str | bytes) -> None:
            channel.sink.add(message)
            channel.sink.add(message)

        channel.stream.listen(twice)
        await channel.sink.done

    sizes = [1, 100, 40_000, 3, 70_000, 20_000, 20_000, 30_000, 0, 200_000, 5] * 8
    messages = [os.urandom(size) for size in sizes]
    async with wschannel.serve(
        handler, "127.0.0.1", 0, compression=None, max_message_size=None
    ) as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with IOWebSocketChannel.connect(
            url, compression=None, max_message_size=None
        ) as channel:
            for message in messages:  # one burst: the server reads many per wake-up
                channel.sink.add(message)
            stream = aiter(channel.stream)
            for message in messages:
                for _ in range(2):
                    assert await asyncio.wait_for(anext(stream), TIMEOUT) == message


async def test_a_pong_leaves_between_the_answers_around_its_ping() -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        channel.stream.listen(channel.sink.add)
        await channel.sink.done

    async with wschannel.serve(handler, "127.0.0.1", 0, compression=None) as server:
        reader, writer = await open_raw_client(server.port)
        mask = b"\x01\x02\x03\x04"
        writer.write(
            frame(0x1, b"one", mask=mask)
            + frame(0x9, b"ping", mask=mask)
            + frame(0x1, b"two", mask=mask)
        )  # one write: the server reads all three at once
        answers = [await read_frame(reader) for _ in range(3)]
        assert answers == [(0x81, b"one"), (0x8A, b"ping"), (0x81, b"two")]
        writer.close()


async def test_what_a_task_sends_in_one_turn_leaves_at_the_next_turn() -> None:
    received: list[str | bytes] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        async for message in channel.stream:
            received.append(message)

    sent = 0
    async with wschannel.serve(handler, "127.0.0.1", 0, compression=None) as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with IOWebSocketChannel.connect(url, compression=None) as channel:
            await wait(channel.ready)
            transport = transport_of(channel)
            assert isinstance(transport, DirectTransport)
            # Gathering also stops after 50 us (the engine's CORK_TIME), so a burst whose
            # last send comes later goes out whole at that send: on a loaded free-threaded
            # build one burst in some tens did (a CI run). A few bursts, bounded: one that
            # ends gathered shows gathering; with none gathered, every burst ends at once.
            gathered = 0
            for _ in range(5):
                for _ in range(500):  # no await in between: one turn of the loop
                    channel.sink.add(f"message {sent}")
                    sent += 1
                gathered = transport.get_write_buffer_size()
                if gathered:
                    break
                await asyncio.sleep(0)
            assert gathered > 0, "sent at once, not gathered"
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert transport.get_write_buffer_size() < gathered
            await wait_until(lambda: len(received) == sent, what="every message arrived")
    assert received == [f"message {i}" for i in range(sent)]


def direct_transports() -> int:
    gc.collect()
    return sum(isinstance(o, DirectTransport) for o in gc.get_objects())


async def test_closed_connections_leave_no_transport_behind() -> None:
    """The compiled SocketIO holds callbacks into its transport: nothing may keep the pair
    alive once the connection is closed (this leaked every connection once)."""

    async def handler(channel: IOWebSocketChannel) -> None:
        async for message in channel.stream:
            channel.sink.add(message)

    before = direct_transports()
    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}"
        for _ in range(20):
            async with IOWebSocketChannel.connect(url) as channel:
                channel.sink.add("ping")
                assert await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT) == "ping"
            await wait(channel.sink.done)
        del channel  # the last one's channel still refers to its transport
    await wait_until(lambda: direct_transports() == before, what="every transport was freed")


async def test_a_listen_callback_takes_one_message_per_read_as_the_stream_would() -> None:
    """A read that brings one message hands it to ``listen``'s callback directly (the
    request/response path): a callback that raises is reported to the loop's exception
    handler and the next message still comes; while the subscription is paused, messages
    wait in the stream and come in order on resume."""
    reported: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
    subscriptions: list[StreamSubscription] = []
    server_channels: list[IOWebSocketChannel] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        def on_data(message: str | bytes) -> None:
            if message == "raise":
                raise RuntimeError("on_data failed")
            channel.sink.add(message)
            if message == "pause":
                subscriptions[0].pause()

        server_channels.append(channel)
        subscriptions.append(channel.stream.listen(on_data))
        await channel.sink.done

    async with (
        wschannel.serve(handler, "127.0.0.1", 0, compression=None) as server,
        IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}", compression=None) as channel,
    ):
        stream = aiter(channel.stream)
        channel.sink.add("one")  # one message in flight: one per read on the server
        assert await asyncio.wait_for(anext(stream), TIMEOUT) == "one"
        channel.sink.add("raise")  # alone in its read: the callback raises
        await wait_until(lambda: bool(reported), what="the failure reported")
        channel.sink.add(b"two")
        assert await asyncio.wait_for(anext(stream), TIMEOUT) == b"two"
        (context,) = reported
        assert context["message"] == "Exception in a WebSocket stream's on_data callback"
        assert isinstance(context["exception"], RuntimeError)

        channel.sink.add("pause")
        assert await asyncio.wait_for(anext(stream), TIMEOUT) == "pause"
        buffered = server_channels[0].stream._buffer
        channel.sink.add("three")  # each alone in its read, as the callback is paused
        await wait_until(lambda: len(buffered) == 1, what="'three' buffered")
        channel.sink.add("four")
        await wait_until(lambda: len(buffered) == 2, what="'four' buffered")
        subscriptions[0].resume()
        for message in ["three", "four"]:
            assert await asyncio.wait_for(anext(stream), TIMEOUT) == message


async def test_a_read_whose_handling_raises_still_hands_its_messages_to_the_consumer(
    raw_server: StartRaw,
) -> None:
    """Handling a read's events raised (a bug: here the callback a pong answers raises):
    the messages of the read before it reach the waiting ``async for`` consumer within that
    read, as after any read (``ChannelDriver.deliver`` ends every read with
    ``MessageStream._read_delivered``, even when handling raised); then the failure goes to
    the loop's exception handler and the connection fails (1006), as the transport's
    documented behaviour says."""
    pong = b"ping"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame(0x1, b"zero"))
        assert await read_frame(reader) == (0x89, pong)  # the client's ping
        # One write, one read on the client: a message, the pong, another message.
        writer.write(frame(0x1, b"one") + frame(0xA, pong) + frame(0x1, b"two"))
        await asyncio.wait_for(reader.read(), TIMEOUT)  # until the client hangs up

    received: list[str | bytes] = []
    failures: list[tuple[object, list[str | bytes]]] = []

    def exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if context["message"] == HANDLING_FAILED:
            failures.append((context["exception"], list(received)))  # what the consumer had
        else:
            loop.default_exception_handler(context)

    asyncio.get_running_loop().set_exception_handler(exception_handler)
    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url, compression=None)
    protocol = channel._transport_protocol
    assert protocol is not None and isinstance(protocol.transport, DirectTransport)
    waiting = asyncio.Event()

    async def consume() -> None:
        async for message in channel.stream:
            received.append(message)
            waiting.set()  # and it waits for the next message in this same step

    consumer = asyncio.create_task(consume())
    await wait(waiting.wait())
    error = RuntimeError("handling the pong failed")

    def answered(rtt: float | None) -> None:
        raise error

    protocol.send_ping(answered, pong)
    await wait(consumer)  # the stream ends with the connection
    assert received == ["zero", "one"]  # "two" came after the failure: never delivered
    assert failures == [(error, ["zero", "one"])]  # "one" was in before the report
    assert channel.close_code == status.ABNORMAL_CLOSURE
    await wait(channel.sink.done)
