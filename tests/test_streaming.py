"""Streaming a message (issue 13): ``channel.send_fragments(chunks)`` sends an iterable or
async iterable of chunks as the fragments of one message, and ``channel.fragments()``
receives messages in pieces without assembling them; both flow-controlled. Over real sockets
on 127.0.0.1, against wschannel, websockets and raw peers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import subprocess
import sys
import sysconfig
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import websockets.asyncio.client
import websockets.asyncio.server
from conftest import (
    SHORT,
    TIMEOUT,
    RawHandler,
    RawServer,
    accept_upgrade,
    close_payload,
    frame,
    next_message,
    open_raw_client,
    read_frame,
    wait,
    wait_until,
    wait_until_sync,
)
from sync_helpers import sync_server, url_of

import wschannel
import wschannel.sync
from wschannel import Fragment, StateError
from wschannel.exceptions import WebSocketConnectionClosed
from wschannel.io import IOWebSocketChannel
from wschannel.server import ServerChannel

StartRaw = Callable[[RawHandler], Awaitable[RawServer]]
MiB = 1 << 20


def chunk(index: int, size: int = MiB) -> bytes:
    """``size`` bytes, different for each ``index``: 16 KiB of seeded noise repeated (so that
    deflate finds matches within its window and compression stays quick)."""
    seed = hashlib.sha256(index.to_bytes(4, "big")).digest()
    block = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(512))
    return (block * (size // len(block) + 1))[:size]


async def stalled(
    paused: Callable[[], bool],
    pulled: Callable[[], int],
    sleep: Callable[[float], Awaitable[object]],
) -> None:
    """Waits until a sender has stalled: ``paused()`` holds and no chunk was pulled for
    SHORT. Fails when that has not happened after 4 * TIMEOUT."""
    previous = -1
    for _ in range(int(4 * TIMEOUT / SHORT)):
        if paused() and pulled() == previous:
            return
        previous = pulled()
        await sleep(SHORT)
    raise AssertionError(f"the sender never stalled ({pulled()} pulled)")


async def collect(pieces: AsyncIterator[Fragment]) -> list[Fragment]:
    """The pieces of one message, up to the one with ``last``."""
    out = []
    async for piece in pieces:
        out.append(piece)
        if piece.last:
            return out
    raise AssertionError(f"the stream ended after {len(out)} pieces, before the last one")


# Peak memory of a 64 MiB message: measured in a fresh process, so that nothing else the
# test run did counts.

PIECES_GROWTH_BOUND = 40 if sysconfig.get_config_var("Py_GIL_DISABLED") else 16
"""MiB the process's peak RSS may grow by while the message goes through in pieces: far
below the message (64 MiB) and the control (the message whole: over 64). Free-threaded
CPython's allocator (mimalloc, a heap per thread) keeps more of what was freed: +25 to
+27 MiB there in the wheel job, +5 to +7 MiB on the default build."""

STREAM_64_MIB = textwrap.dedent(
    """
    import asyncio, hashlib, json, sys
    sys.path.insert(0, sys.argv[2])
    import wschannel
    from test_streaming import chunk

    COUNT = 64
    compression = sys.argv[1] == "compressed"
    whole = sys.argv[1] == "whole"  # the control: the server takes the message whole

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS (Linux 4.0+)

    async def main():
        result = {}

        async def handler(channel):
            digest, size, pieces, largest = hashlib.sha256(), 0, 0, 0
            if whole:
                message = await anext(aiter(channel.stream))
                digest.update(message)
                result.update(size=len(message), pieces=1, largest=len(message))
                result.update(sha=digest.hexdigest())
                del message
                channel.sink.add("done")
                return
            async for piece in channel.fragments(max_message_size=None):
                digest.update(piece.data)
                size += len(piece.data)
                pieces += 1
                largest = max(largest, len(piece.data))
                if piece.last:
                    break
            result.update(size=size, pieces=pieces, largest=largest, sha=digest.hexdigest())
            channel.sink.add("done")

        limit = None if whole else 1 << 20
        async with wschannel.serve(
            handler, "127.0.0.1", 0, compression=compression, max_message_size=limit
        ) as server:
            url = f"ws://127.0.0.1:{server.port}"
            async with wschannel.connect(url, compression=compression) as warm:
                warm.sink.add(b"x" * 1000)  # everything imported and allocated once
            await asyncio.sleep(0)
            reset_peak()
            before = status("VmRSS")
            sent = hashlib.sha256()

            def chunks():
                for index in range(COUNT):
                    data = chunk(index)
                    sent.update(data)
                    yield data

            async with wschannel.connect(url, compression=compression) as channel:
                await channel.send_fragments(chunks())
                assert await anext(aiter(channel.stream)) == "done"
            result.update(sent=sent.hexdigest(), before=before, growth=status("VmHWM") - before)
        print(json.dumps(result))

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
@pytest.mark.parametrize("compression", ["uncompressed", "compressed", "whole"])
def test_a_64_mib_message_in_1_mib_chunks_is_received_in_pieces_in_bounded_memory(
    compression: str,
) -> None:
    """The client sends 64 chunks of 1 MiB as one message; the server hashes its pieces.
    Peak RSS of the process (both ends) grows by far less than the message; the control
    ("whole": the server takes the message whole) shows the measurement sees it."""
    tests = os.path.dirname(__file__)
    done = subprocess.run(
        [sys.executable, "-c", STREAM_64_MIB, compression, tests],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 24,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["size"] == 64 * MiB
    assert result["sha"] == result["sent"]
    growth = result["growth"] / MiB
    print(f"{compression}: RSS {result['before'] / MiB:.1f} MiB, peak +{growth:.1f} MiB")
    if compression == "whole":
        assert growth > 64, result
        return
    assert result["pieces"] > 64  # in pieces, never assembled
    assert result["largest"] <= MiB
    assert growth < PIECES_GROWTH_BOUND, result


# Sending.


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, asyncio.Queue[object]]]:
    """A wschannel server that puts every message it receives (whole) in a queue, and the
    close code when its connection ends."""
    received: asyncio.Queue[object] = asyncio.Queue()

    async def handler(channel: ServerChannel) -> None:
        async for message in channel.stream:
            received.put_nowait(message)
        await channel.sink.done
        received.put_nowait(("closed", channel.close_code))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.port}", received


async def got(queue: asyncio.Queue[object]) -> object:
    return await asyncio.wait_for(queue.get(), TIMEOUT)


@pytest.mark.parametrize("compression", [True, False])
async def test_sync_and_async_iterables_each_make_one_message(
    receiver: tuple[str, asyncio.Queue[object]], compression: bool
) -> None:
    url, received = receiver

    async def agen() -> AsyncIterator[bytes | bytearray | memoryview]:
        for part in (b"ab", bytearray(b"cd"), memoryview(b"ef")):
            yield part

    async with IOWebSocketChannel.connect(url, compression=compression) as channel:
        await channel.send_fragments(["κό", "", "σμε"])
        await channel.send_fragments(agen())
        await channel.send_fragments([])  # no chunk: no message
        channel.sink.add("after")
        assert await got(received) == "κόσμε"
        assert await got(received) == b"abcdef"
        assert await got(received) == "after"


async def test_messages_added_meanwhile_wait_until_the_fragmented_one_ends(
    receiver: tuple[str, asyncio.Queue[object]],
) -> None:
    url, received = receiver
    first_out = asyncio.Event()
    go_on = asyncio.Event()

    async def chunks() -> AsyncIterator[str]:
        yield "one, "
        first_out.set()
        await go_on.wait()
        yield "two"

    async with IOWebSocketChannel.connect(url) as channel:
        sending = asyncio.create_task(channel.send_fragments(chunks()))
        await wait(first_out.wait())
        channel.sink.add("added meanwhile")
        channel.sink.add(bytearray(b"bytes too"))
        second = asyncio.create_task(channel.send_fragments(["second ", "fragmented"]))
        await asyncio.sleep(0)
        assert not second.done()  # waits its turn
        assert received.empty()
        go_on.set()
        await wait(sending)
        await wait(second)
        assert await got(received) == "one, two"
        assert await got(received) == "added meanwhile"
        assert await got(received) == b"bytes too"
        assert await got(received) == "second fragmented"


async def test_pings_go_out_between_fragments(
    receiver: tuple[str, asyncio.Queue[object]],
) -> None:
    url, received = receiver
    times: list[float] = []

    async with IOWebSocketChannel.connect(url) as channel:

        async def chunks() -> AsyncIterator[bytes]:
            yield b"before the ping "
            times.append(await asyncio.wait_for(channel.ping(), TIMEOUT))
            yield b"after it"

        await channel.send_fragments(chunks())
        assert await got(received) == b"before the ping after it"
        assert len(times) == 1 and times[0] >= 0


async def test_a_raw_peer_sees_the_fragments_and_a_ping_between_them(raw_server: StartRaw) -> None:
    frames: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        for _ in range(4):
            first, second = await reader.readexactly(2)
            mask = await reader.readexactly(4)
            payload = await reader.readexactly(second & 0x7F)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            frames.put_nowait((first, data))
            if first == 0x89:
                writer.write(frame(0xA, data))

    server = await raw_server(peer)
    async with IOWebSocketChannel.connect(server.url, compression=False) as channel:

        async def chunks() -> AsyncIterator[str]:
            yield "ab"
            await asyncio.wait_for(channel.ping(), TIMEOUT)
            yield "c"

        await channel.send_fragments(chunks())
        seen = [await asyncio.wait_for(frames.get(), TIMEOUT) for _ in range(4)]
    assert [first for first, _ in seen] == [0x01, 0x89, 0x00, 0x80]  # text, ping, cont, fin
    assert (seen[0][1], seen[2][1], seen[3][1]) == (b"ab", b"c", b"")


@pytest.mark.parametrize("compression", [True, False])
async def test_a_websockets_peer_receives_the_fragmented_message_whole(compression: bool) -> None:
    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        async for message in ws:
            data = message.encode() if isinstance(message, str) else message
            await ws.send(f"{type(message).__name__} {hashlib.sha256(data).hexdigest()}")

    parts = [chunk(i, 300_000) for i in range(8)]
    whole = b"".join(parts)
    text = "ü€𝄞 streamed " * 10_000
    async with websockets.asyncio.server.serve(
        handler, "127.0.0.1", 0, compression="deflate" if compression else None, max_size=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with IOWebSocketChannel.connect(
            f"ws://127.0.0.1:{port}", compression=compression
        ) as channel:
            answers = aiter(channel.stream)
            await channel.send_fragments(parts)
            assert await next_message(answers) == f"bytes {hashlib.sha256(whole).hexdigest()}"
            await channel.send_fragments(text[i : i + 7_777] for i in range(0, len(text), 7_777))
            digest = hashlib.sha256(text.encode()).hexdigest()
            assert await next_message(answers) == f"str {digest}"


# Misuse.


async def test_misuse_raises_at_the_call(receiver: tuple[str, asyncio.Queue[object]]) -> None:
    url, received = receiver
    async with IOWebSocketChannel.connect(url) as channel:
        with pytest.raises(TypeError, match=r"not one message: send one message with sink\.add"):
            await channel.send_fragments("a whole message")
        with pytest.raises(TypeError, match="iterable or async iterable"):
            await channel.send_fragments(42)  # type: ignore[arg-type]
        # A first chunk of the wrong type: nothing was sent, the connection is fine.
        with pytest.raises(TypeError):
            await channel.send_fragments([[1, 2]])  # type: ignore[list-item]
        channel.sink.add("still open")
        assert await got(received) == "still open"
        channel.stream.listen(lambda message: None)
        with pytest.raises(StateError):
            channel.fragments()  # the stream has its subscriber already
    with pytest.raises(StateError, match="after closing"):
        await channel.send_fragments(["late"])


async def test_mixed_chunks_raise_and_close_with_1011(
    receiver: tuple[str, asyncio.Queue[object]],
) -> None:
    url, received = receiver
    channel = await IOWebSocketChannel.connect(url)
    with pytest.raises(TypeError, match=r"all str .* or all bytes-like .* got bytes in a text"):
        await channel.send_fragments(["text, then ", b"bytes"])
    assert await got(received) == ("closed", 1011)  # the part is never taken for the whole
    await wait(channel.sink.done)
    assert channel.close_code == 1011


async def test_a_failing_source_raises_its_error_and_closes_with_1011(
    receiver: tuple[str, asyncio.Queue[object]],
) -> None:
    url, received = receiver

    def chunks() -> Iterator[bytes]:
        yield b"a part"
        raise ValueError("the source broke")

    channel = await IOWebSocketChannel.connect(url)
    with pytest.raises(ValueError, match="the source broke"):
        await channel.send_fragments(chunks())
    assert await got(received) == ("closed", 1011)


async def test_the_peer_closing_midway_raises_connection_closed(raw_server: StartRaw) -> None:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame(0x8, close_payload(1001, "leaving")))
        await reader.read()

    server = await raw_server(peer)
    closed = asyncio.Event()

    async with IOWebSocketChannel.connect(server.url) as channel:
        channel.sink.done.add_done_callback(lambda _: closed.set())

        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            await wait(closed.wait())
            yield b"never sent"

        with pytest.raises(WebSocketConnectionClosed):
            await channel.send_fragments(chunks())
    assert channel.close_code == 1001


# Receiving in pieces.


async def test_text_cut_inside_a_character_comes_in_whole_characters(
    raw_server: StartRaw,
) -> None:
    """A raw client cuts "€" (e2 82 ac) between two frames, sent one read apart: the first
    piece is "a", the second "€"."""
    pieces: asyncio.Queue[Fragment] = asyncio.Queue()

    async def handler(channel: ServerChannel) -> None:
        async for piece in channel.fragments():
            pieces.put_nowait(piece)
            channel.sink.add(repr(piece.data))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        reader, writer = await open_raw_client(server.port)
        mask = b"\x01\x02\x03\x04"
        writer.write(
            bytes([0x01, 0x80 | 2]) + mask + bytes(b ^ mask[i] for i, b in enumerate(b"a\xe2"))
        )
        assert await read_frame(reader) == (0x81, b"'a'")
        writer.write(
            bytes([0x80, 0x80 | 2]) + mask + bytes(b ^ mask[i] for i, b in enumerate(b"\x82\xac"))
        )
        assert await read_frame(reader) == (0x81, "'€'".encode())
        assert [await pieces.get(), await pieces.get()] == [Fragment("a", False), Fragment("€")]
        writer.close()


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_pieces_from_a_websockets_peer(compression: str | None) -> None:
    """websockets sends fragmented and whole messages; the server gets them in pieces, each
    message's pieces ending with ``last``; a message over the channel's max_message_size
    is fine in pieces."""
    results: asyncio.Queue[list[Fragment]] = asyncio.Queue()

    async def handler(channel: ServerChannel) -> None:
        pieces = channel.fragments(max_message_size=None)
        while True:
            results.put_nowait(await collect(pieces))

    big = [chunk(i, 600_000) for i in range(4)]  # 2.4 MB: over the default 1 MiB limit
    async with wschannel.serve(
        handler, "127.0.0.1", 0, compression=compression is not None
    ) as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with websockets.asyncio.client.connect(url, compression=compression) as ws:
            await ws.send(big)
            await ws.send("whole ✓")
            await ws.send(["κό", "σμε"])
            message = await asyncio.wait_for(results.get(), TIMEOUT)
            assert b"".join(p.data for p in message) == b"".join(big)  # type: ignore[misc]
            assert all(isinstance(p.data, bytes) for p in message)
            assert len(message) > 1
            whole = await asyncio.wait_for(results.get(), TIMEOUT)
            assert "".join(p.data for p in whole) == "whole ✓"  # type: ignore[misc]
            text = await asyncio.wait_for(results.get(), TIMEOUT)
            assert "".join(p.data for p in text) == "κόσμε"  # type: ignore[misc]


async def test_a_message_over_the_pieces_limit_fails_with_1009() -> None:
    codes: asyncio.Queue[int | None] = asyncio.Queue()

    async def handler(channel: ServerChannel) -> None:
        async for _ in channel.fragments(max_message_size=100_000):
            pass
        await channel.sink.done
        codes.put_nowait(channel.close_code)

    async with (
        wschannel.serve(handler, "127.0.0.1", 0) as server,
        IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}") as channel,
    ):
        await channel.send_fragments([b"x" * 60_000, b"y" * 60_000])
        assert await asyncio.wait_for(codes.get(), TIMEOUT) == 1009
    assert channel.close_code == 1009


async def test_fragments_checks_its_limit_and_wraps_earlier_whole_messages(
    receiver: tuple[str, asyncio.Queue[object]],
) -> None:
    async def handler(channel: ServerChannel) -> None:
        channel.sink.add("before")
        await channel.send_fragments(["af", "ter"])

    async with (
        wschannel.serve(handler, "127.0.0.1", 0) as server,
        IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}") as channel,
    ):
        with pytest.raises(ValueError, match="max_message_size"):
            channel.fragments(max_message_size=-1)
        await wait_until(lambda: channel.stream._buffer, what="the first message came")
        pieces = channel.fragments()  # applies from the next message
        assert await collect(pieces) == [Fragment("before", True)]
        after = await collect(pieces)
        assert "".join(p.data for p in after) == "after"  # type: ignore[misc]
        assert after[-1].last


async def test_both_directions_are_flow_controlled() -> None:
    """A server that takes its pieces only when told: its queue fills, it stops reading,
    the client's write buffer fills, and send_fragments stops pulling chunks, far short of
    the message; once the server consumes again, the whole message arrives."""
    consume = asyncio.Event()
    total: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler(channel: ServerChannel) -> None:
        size = 0
        async for piece in channel.fragments(max_message_size=None):
            await consume.wait()
            size += len(piece.data)
            if piece.last:
                total.set_result(size)
                return

    pulled = 0

    def chunks() -> Iterator[bytes]:
        nonlocal pulled
        for index in range(64):
            pulled += 1
            yield chunk(index % 4)

    async with (
        wschannel.serve(handler, "127.0.0.1", 0, max_queue=4) as server,
        IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}", write_limit=MiB) as channel,
    ):
        sending = asyncio.create_task(channel.send_fragments(chunks()))
        protocol = channel._transport_protocol
        assert protocol is not None
        (peer,) = server.connections
        # Stalled: the server does not read, the client's writes wait, and no chunk was
        # pulled for SHORT. Both pausing is not yet the end: the kernel may still move bytes
        # from the client's send buffer into the server's receive buffer (which grows as it
        # fills), so the client's writes resume and a few more chunks go (a 3.12 run beside
        # Autobahn pulled 10 where the pause began at 6). What matters is that it stops, far
        # short of the message: the pieces queue (4) and the kernel's buffers hold the rest.
        await stalled(
            lambda: peer.stream._reading_paused and protocol._writing_paused,
            lambda: pulled,
            asyncio.sleep,
        )
        assert not sending.done()
        assert pulled < 40, pulled
        consume.set()
        await asyncio.wait_for(sending, TIMEOUT * 4)
        assert await asyncio.wait_for(total, TIMEOUT) == 64 * MiB


# The blocking flavour (wschannel.sync): the same calls, in threads.


def reply(channel: wschannel.sync.SyncWebSocketChannel) -> str:
    try:
        return str(channel.receive(TIMEOUT))
    except EOFError:
        raise AssertionError(
            f"closed with {channel.close_code} {channel.close_reason!r}, no reply"
        ) from None


@pytest.mark.parametrize("compression", [True, False])
def test_blocking_channels_send_fragments_and_receive_pieces(compression: bool) -> None:
    def handler(channel: wschannel.sync.SyncWebSocketChannel) -> None:
        digest, size, pieces = hashlib.sha256(), 0, 0
        fragments = channel.fragments(max_message_size=None)
        # The reader thread runs before the handler does: frames it read before fragments()
        # would count against the whole-message limit. The client waits for this.
        channel.sink.add("ready")
        for piece in fragments:
            data = piece.data.encode() if isinstance(piece.data, str) else piece.data
            digest.update(data)
            size, pieces = size + len(data), pieces + 1
            if piece.last:
                channel.sink.add(json.dumps([size, pieces, digest.hexdigest()]))
                digest, size, pieces = hashlib.sha256(), 0, 0

    parts = [chunk(i, 300_000) for i in range(8)]
    text = "ü€𝄞 streamed " * 10_000
    with (
        sync_server(handler, compression=compression) as server,
        wschannel.sync.connect(url_of(server), compression=compression) as channel,
    ):
        assert reply(channel) == "ready"
        channel.send_fragments(iter(parts))
        size, pieces, digest = json.loads(reply(channel))
        assert (size, digest) == (len(b"".join(parts)), hashlib.sha256(b"".join(parts)).hexdigest())
        assert pieces > 1  # over the channel's 1 MiB limit: received in pieces
        channel.send_fragments(text[i : i + 5_000] for i in range(0, len(text), 5_000))
        size, _, digest = json.loads(reply(channel))
        assert digest == hashlib.sha256(text.encode()).hexdigest()


def test_blocking_messages_added_meanwhile_follow_the_fragmented_one() -> None:
    received: queue.Queue[object] = queue.Queue()

    def handler(channel: wschannel.sync.SyncWebSocketChannel) -> None:
        for message in channel.stream:
            received.put(message)
        received.put(("closed", channel.close_code))

    with (
        sync_server(handler) as server,
        wschannel.sync.connect(url_of(server)) as channel,
    ):

        def chunks() -> Iterator[str]:
            yield "one, "
            other = threading.Thread(target=channel.sink.add, args=("from a thread",))
            other.start()
            other.join(TIMEOUT)  # add() returned: the message waits for this one
            channel.sink.add(bytearray(b"from this thread"))
            yield "two"

        channel.send_fragments(chunks())
        assert received.get(timeout=TIMEOUT) == "one, two"
        assert received.get(timeout=TIMEOUT) == "from a thread"
        assert received.get(timeout=TIMEOUT) == b"from this thread"
        with pytest.raises(TypeError, match=r"got str in a binary message"):
            channel.send_fragments([b"bytes, then ", "text"])
        assert received.get(timeout=TIMEOUT) == ("closed", 1011)
        with pytest.raises(TypeError, match="not one message"):
            channel.send_fragments(b"one message")  # type: ignore[arg-type]


# Every flavour (issue 13, what was left): the byte-stream channels of wschannel.trio,
# wschannel.anyio (on asyncio and on trio) and WebSocketChannel.over; the delivery= option of
# every connect and serve; the browser's channel.

STRUCTURED = ("trio", "anyio-asyncio", "anyio-trio")
"""wschannel.trio's connect and serve under trio.run; wschannel.anyio's under anyio.run on
its asyncio and trio backends."""


def run_structured(
    flavour: str, body: Callable[[Any], Awaitable[None]], timeout: float = 4 * TIMEOUT
) -> None:
    """``body(library)`` (``wschannel.trio`` or ``wschannel.anyio``) under the flavour's
    event loop, within ``timeout``."""
    import anyio
    import trio

    library: Any
    if flavour == "trio":
        import wschannel.trio

        library = wschannel.trio
    else:
        import wschannel.anyio

        library = wschannel.anyio

    async def main() -> None:
        with anyio.fail_after(timeout):
            await body(library)

    if flavour == "trio":
        trio.run(main)
    else:
        anyio.run(main, backend=flavour.split("-")[1])


def piece_bytes(piece: Fragment) -> bytes:
    data = piece.data
    return data.encode() if isinstance(data, str) else data


def summary(message: list[Fragment]) -> str:
    """What a receiver reports of a message in pieces: kind, pieces, largest, digest."""
    data = b"".join(piece_bytes(p) for p in message)
    kind = type(message[0].data).__name__
    largest = max(len(p.data) for p in message)
    return json.dumps([kind, len(message), largest, len(data), hashlib.sha256(data).hexdigest()])


def expected_summary(kind: str, data: bytes) -> tuple[str, int, str]:
    return kind, len(data), hashlib.sha256(data).hexdigest()


def reported(text: object) -> tuple[list[int], tuple[str, int, str]]:
    """A summary's counts (pieces, largest), and its (kind, size, digest) to compare with
    expected_summary."""
    kind, pieces, largest, size, digest = json.loads(str(text))
    return [int(pieces), int(largest)], (str(kind), int(size), str(digest))


async def pieces_server_handler(channel: Any) -> None:
    """A server handler: receives in pieces (any size), answers each message with its
    summary, then sends it back with send_fragments, piece by piece."""
    pieces = channel.fragments(max_message_size=None)
    channel.sink.add("ready")  # the client sends once fragments() applies
    message: list[Fragment] = []
    async for piece in pieces:
        message.append(piece)
        if piece.last:
            channel.sink.add(summary(message))
            await channel.send_fragments([p.data for p in message if p.data] or [message[0].data])
            message = []


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
@pytest.mark.parametrize("flavour", STRUCTURED)
def test_trio_and_anyio_channels_send_fragments_and_receive_pieces(
    flavour: str, compression: bool
) -> None:
    """Both ends native (wschannel.trio or wschannel.anyio): the client sends a 2.4 MB
    binary message (over the default 1 MiB limit) from a list and a text one from an async
    generator; the server takes both in pieces and sends each back in fragments, which the
    client takes in pieces too."""
    parts = [chunk(i, 300_000) for i in range(8)]
    whole = b"".join(parts)
    text = "ü€𝄞 streamed " * 10_000

    async def text_chunks() -> AsyncIterator[str]:
        for i in range(0, len(text), 7_777):
            yield text[i : i + 7_777]

    async def body(library: Any) -> None:
        async with library.serve(
            pieces_server_handler, "127.0.0.1", 0, compression=compression
        ) as server:
            url = f"ws://127.0.0.1:{server.port}"
            async with library.connect(url, compression=compression) as channel:
                pieces = channel.fragments(max_message_size=None)
                assert [p.data for p in await collect(pieces)] == ["ready"]
                await channel.send_fragments(parts)
                counts, got = reported((await collect(pieces))[0].data)
                assert got == expected_summary("bytes", whole)
                assert counts[0] > 1 and counts[1] <= MiB  # in pieces, never whole
                echoed = await collect(pieces)
                assert b"".join(piece_bytes(p) for p in echoed) == whole
                assert len(echoed) > 1 and all(len(p.data) <= MiB for p in echoed)

                await channel.send_fragments(text_chunks())
                counts, got = reported((await collect(pieces))[0].data)
                assert got == expected_summary("str", text.encode())
                echoed = await collect(pieces)
                assert "".join(str(p.data) for p in echoed) == text

    run_structured(flavour, body)


@pytest.mark.parametrize("flavour", STRUCTURED)
def test_trio_and_anyio_messages_added_meanwhile_follow_the_fragmented_one(flavour: str) -> None:
    """While send_fragments waits for its source, messages added and another
    send_fragments wait; a broadcast skips the connection; all follow in order."""
    import anyio

    async def body(library: Any) -> None:
        received: list[object] = []
        got_all = anyio.Event()

        async def handler(channel: Any) -> None:
            async for message in channel.stream:
                received.append(message)
                if len(received) == 4:
                    got_all.set()

        async with library.serve(handler, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}"
            async with library.connect(url) as channel:
                first_out, go_on = anyio.Event(), anyio.Event()

                async def chunks() -> AsyncIterator[str]:
                    yield "one, "
                    first_out.set()
                    await go_on.wait()
                    yield "two"

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(channel.send_fragments, chunks())
                    await first_out.wait()
                    channel.sink.add("added meanwhile")
                    channel.sink.add(bytearray(b"bytes too"))
                    tasks.start_soon(channel.send_fragments, ["second ", "fragmented"])
                    await anyio.sleep(0)
                    assert wschannel.broadcast([channel], "to all") == 0  # skipped meanwhile
                    go_on.set()
                await got_all.wait()
                assert received == [
                    "one, two",
                    "added meanwhile",
                    b"bytes too",
                    "second fragmented",
                ]

    run_structured(flavour, body)


@pytest.mark.parametrize("flavour", STRUCTURED)
def test_trio_and_anyio_send_fragments_misuse_and_1011(flavour: str) -> None:
    async def body(library: Any) -> None:
        import anyio

        codes: list[int | None] = []
        closed = anyio.Event()

        async def handler(channel: Any) -> None:
            async for _ in channel.stream:
                pass
            await channel.sink.done
            codes.append(channel.close_code)
            closed.set()

        async with library.serve(handler, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}"
            with pytest.raises(ValueError, match="delivery must be 'messages'"):
                library.connect(url, delivery="whole")
            with pytest.raises(ValueError, match="delivery must be 'messages'"):
                library.serve(handler, "127.0.0.1", 0, delivery=True)
            channel = await library.connect(url)
            with pytest.raises(TypeError, match=r"not one message: send one message"):
                await channel.send_fragments(b"one message")
            with pytest.raises(TypeError, match="iterable or async iterable"):
                await channel.send_fragments(42)
            with pytest.raises(TypeError):
                await channel.send_fragments([[1, 2]])  # nothing went out: still open
            with pytest.raises(ValueError, match="max_message_size"):
                channel.fragments(max_message_size=-1)
            channel.fragments()
            with pytest.raises(StateError):
                channel.fragments()  # the stream has its subscriber already
            with pytest.raises(TypeError, match=r"got bytes in a text message"):
                await channel.send_fragments(["text, then ", b"bytes"])
            await closed.wait()
            assert codes == [1011]  # the part is never taken for the whole
            await channel.sink.done
            assert channel.close_code == 1011
            channel.sink.close()
            with pytest.raises(StateError, match="after closing"):
                await channel.send_fragments(["late"])

    run_structured(flavour, body)


@pytest.mark.parametrize("flavour", STRUCTURED)
def test_trio_and_anyio_fragments_are_flow_controlled_both_ways(flavour: str) -> None:
    """A server that takes its pieces only when told: its queue fills, it stops reading,
    the client's write queue goes over write_limit, and send_fragments stops pulling
    chunks, far short of the 64 MiB message; then the whole message arrives."""
    import anyio

    async def body(library: Any) -> None:
        consume = anyio.Event()
        total: list[int] = []
        done = anyio.Event()

        async def handler(channel: Any) -> None:
            size = 0
            async for piece in channel.fragments(max_message_size=None):
                await consume.wait()
                size += len(piece.data)
                if piece.last:
                    total.append(size)
                    done.set()
                    return

        pulled = 0

        def chunks() -> Iterator[bytes]:
            nonlocal pulled
            for index in range(64):
                pulled += 1
                yield chunk(index % 4)

        async with library.serve(handler, "127.0.0.1", 0, max_queue=4) as server:
            url = f"ws://127.0.0.1:{server.port}"
            async with library.connect(url, write_limit=MiB) as channel:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(channel.send_fragments, chunks())
                    (peer,) = server.connections
                    streams = channel._driver.streams
                    # Stalled: the server does not read, the client's queue is over its
                    # limit, and no chunk was pulled for SHORT (the kernel's buffers, which
                    # take a few MiB on loopback, are full).
                    await stalled(
                        lambda: peer.stream._reading_paused and streams.writes_waiting(),
                        lambda: pulled,
                        anyio.sleep,
                    )
                    assert not done.is_set()
                    assert pulled < 40, pulled  # far short of the message
                    consume.set()
                await done.wait()
                assert total == [64 * MiB]

    run_structured(flavour, body, timeout=12 * TIMEOUT)


STREAM_LARGE_STRUCTURED = textwrap.dedent(
    """
    import hashlib, json, sys
    sys.path.insert(0, sys.argv[3])
    import anyio, trio
    from test_streaming import chunk

    COUNT = 32
    flavour, compression = sys.argv[1], sys.argv[2] == "compressed"
    if flavour == "trio":
        import wschannel.trio as library
    else:
        import wschannel.anyio as library

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    async def main():
        result = {}

        async def handler(channel):
            digest, size, pieces, largest = hashlib.sha256(), 0, 0, 0
            async for piece in channel.fragments():
                digest.update(piece.data)
                size += len(piece.data)
                pieces += 1
                largest = max(largest, len(piece.data))
                if piece.last:
                    break
            result.update(size=size, pieces=pieces, largest=largest, sha=digest.hexdigest())
            channel.sink.add("done")

        # Pieces from the first frame, each message of any size (delivery="pieces").
        async with library.serve(
            handler, "127.0.0.1", 0, compression=compression, max_message_size=None,
            delivery="pieces",
        ) as server:
            url = f"ws://127.0.0.1:{server.port}"
            async with library.connect(url, compression=compression) as warm:
                warm.sink.add(b"x" * 1000)  # everything imported and allocated once
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS (Linux 4.0+)
            before = status("VmRSS")
            sent = hashlib.sha256()

            def chunks():
                for index in range(COUNT):
                    data = chunk(index)
                    sent.update(data)
                    yield data

            async with library.connect(url, compression=compression) as channel:
                await channel.send_fragments(chunks())
                assert await anext(aiter(channel.stream)) == "done"
            result.update(sent=sent.hexdigest(), before=before, growth=status("VmHWM") - before)
        print(json.dumps(result))

    if flavour == "trio":
        trio.run(main)
    else:
        anyio.run(main, backend="asyncio")
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
@pytest.mark.parametrize(
    ("flavour", "compression"),
    [("trio", "uncompressed"), ("trio", "compressed"), ("anyio-asyncio", "uncompressed")],
)
def test_a_32_mib_message_through_trio_and_anyio_in_bounded_memory(
    flavour: str, compression: str
) -> None:
    """32 chunks of 1 MiB as one message from a trio (anyio) client to a trio (anyio)
    server started with delivery="pieces": the process's peak RSS grows by far less than
    the message (the bound of the 64 MiB asyncio test)."""
    tests = os.path.dirname(__file__)
    done = subprocess.run(
        [sys.executable, "-c", STREAM_LARGE_STRUCTURED, flavour, compression, tests],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 24,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["size"] == 32 * MiB
    assert result["sha"] == result["sent"]
    growth = result["growth"] / MiB
    print(f"{flavour} {compression}: RSS {result['before'] / MiB:.1f} MiB, peak +{growth:.1f} MiB")
    assert result["pieces"] > 32  # in pieces, never assembled
    assert result["largest"] <= MiB
    assert growth < PIECES_GROWTH_BOUND, result


# WebSocketChannel.over: a TCP connection made by hand, the byte stream of asyncio, anyio (on
# asyncio and trio) or trio, over() on both ends (no HTTP upgrade).

OVER = ("asyncio", "anyio-asyncio", "anyio-trio", "trio")


def run_over(flavour: str, body: Callable[[Any, Any], Awaitable[None]]) -> None:
    """``body(client, server)``: two channels made by :func:`wschannel.bytestream.over` on
    the two ends of a loopback TCP connection, in the flavour's streams and event loop; the
    server end delivers in pieces from its first frame (``delivery="pieces"``)."""
    import anyio
    import anyio.abc
    import trio

    from wschannel.bytestream import over

    def ends(client: tuple[Any, Any], server: tuple[Any, Any]) -> tuple[Any, Any]:
        return (
            over(*client, server_side=False),
            over(
                *server,
                server_side=True,
                max_message_size=None,
                max_queue=None,  # the test reads once the message is sent
                delivery="pieces",
            ),
        )

    async def on_asyncio() -> None:
        accepted: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
        listener = await asyncio.start_server(
            lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0
        )
        async with listener:
            port = listener.sockets[0].getsockname()[1]
            client = await asyncio.open_connection("127.0.0.1", port)
            server = await asyncio.wait_for(accepted, TIMEOUT)
            await asyncio.wait_for(body(*ends(client, server)), 4 * TIMEOUT)

    async def on_anyio() -> None:
        with anyio.fail_after(4 * TIMEOUT):
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
            async with listener:
                port = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_port)
                client = await anyio.connect_tcp("127.0.0.1", port)
                socket_listener: Any = listener.listeners[0]
                server = await socket_listener.accept()
                await body(*ends((client, client), (server, server)))

    async def on_trio() -> None:
        with trio.fail_after(4 * TIMEOUT):
            (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listener.socket.getsockname()[1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            server = await listener.accept()
            await body(*ends((client, client), (server, server)))
            await listener.aclose()

    if flavour == "asyncio":
        asyncio.run(on_asyncio())
    elif flavour == "trio":
        trio.run(on_trio)
    else:
        anyio.run(on_anyio, backend=flavour.split("-")[1])


@pytest.mark.parametrize("flavour", OVER)
def test_over_sends_fragments_and_receives_pieces_on_every_byte_stream(flavour: str) -> None:
    """over(): a 2.4 MB message in fragments, with a message added meanwhile, to an end
    made with delivery="pieces" (pieces from its first frame, any size); and back."""
    parts = [chunk(i, 300_000) for i in range(8)]
    whole = b"".join(parts)

    async def body(client: Any, server: Any) -> None:
        added = False

        def chunks() -> Iterator[bytes]:
            nonlocal added
            for index, part in enumerate(parts):
                if index == 4:
                    client.sink.add("added meanwhile")
                    added = True
                yield part

        await client.send_fragments(chunks())
        assert added
        received = aiter(server.stream)  # pieces from the first frame: Fragment items
        message: list[Fragment] = []
        while not message or not message[-1].last:
            piece = await anext(received)
            assert type(piece) is Fragment
            message.append(piece)
        assert b"".join(piece_bytes(p) for p in message) == whole
        assert len(message) > 1 and all(len(p.data) <= MiB for p in message)
        assert await anext(received) == Fragment("added meanwhile")

        async def back() -> AsyncIterator[str]:
            yield "κό"
            yield "σμε"

        await server.send_fragments(back())
        assert await anext(aiter(client.stream)) == "κόσμε"  # the client takes it whole
        client.sink.close()
        await server.sink.done
        await client.sink.done
        assert (server.close_code, client.close_code) == (1005, 1005)

    run_over(flavour, body)


# delivery="pieces": connect and serve start a connection in pieces, so that nothing is read
# whole before the handler asks for fragments(): the blocking server's reader thread reads
# before its handler runs.

BIG = 3 * MiB


@pytest.mark.parametrize("delivery", ["pieces", "messages"])
def test_a_blocking_server_with_delivery_pieces_never_holds_a_message_whole(delivery: str) -> None:
    """The handler calls fragments() only once its reader has read a 3 MiB message and the
    small one after it: with delivery="pieces" it still gets pieces of at most 1 MiB. (With
    "messages", the control, the reader assembled the message whole first.)"""
    results: queue.Queue[object] = queue.Queue()

    def handler(channel: wschannel.sync.SyncWebSocketChannel) -> None:
        stream = channel.stream

        def read_both() -> bool:
            # Under the stream's mutex: the reader thread appends meanwhile, and on a
            # free-threaded build copying a deque that another thread changes raises.
            with stream._mutex:
                items = list(stream._buffer)
            return any(getattr(item, "data", item) == "end" for item in items)

        try:
            wait_until_sync(
                read_both,
                4 * TIMEOUT,
                what="the reader read both messages",
            )
        except AssertionError as exc:
            results.put(exc)
            return
        sizes = []
        for piece in channel.fragments():
            sizes.append(len(piece.data))
            if piece.data == "end":
                break
        results.put(sizes)

    with (
        sync_server(handler, delivery=delivery, max_message_size=None, max_queue=None) as server,
        wschannel.sync.connect(url_of(server)) as channel,
    ):
        channel.sink.add(chunk(0, BIG))  # one frame
        channel.sink.add("end")
        sizes = results.get(timeout=TIMEOUT * 5)
    assert isinstance(sizes, list), sizes
    assert sum(sizes) == BIG + 3
    if delivery == "pieces":
        assert max(sizes) <= MiB and len(sizes) > 4
    else:
        assert sizes == [BIG, 3]


async def test_asyncio_connect_and_serve_with_delivery_pieces() -> None:
    """The asyncio server and client: stream items are pieces from the first frame, a
    message of any size with max_message_size=None."""

    async def handler(channel: ServerChannel) -> None:
        stream: AsyncIterator[Any] = aiter(channel.stream)  # pieces from the first frame
        async for piece in stream:
            assert type(piece) is Fragment
            if piece.last:
                channel.sink.add(b"x" * BIG)  # to the client, also in pieces
                channel.sink.add("end")

    async with wschannel.serve(
        handler, "127.0.0.1", 0, delivery="pieces", max_message_size=None
    ) as server:
        url = f"ws://127.0.0.1:{server.port}"
        with pytest.raises(ValueError, match="delivery must be"):
            IOWebSocketChannel.connect(url, delivery="fragments")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="delivery must be"):
            wschannel.serve(handler, "127.0.0.1", 0, delivery="all")  # type: ignore[arg-type]
        async with wschannel.connect(url, delivery="pieces", max_message_size=None) as channel:
            channel.sink.add(b"y" * BIG)
            received: AsyncIterator[Any] = aiter(channel.stream)
            sizes = []
            while True:
                piece = await asyncio.wait_for(anext(received), TIMEOUT)
                assert type(piece) is Fragment
                sizes.append(len(piece.data))
                if piece.data == "end":
                    break
            assert sum(sizes) == BIG + 3 and max(sizes) <= MiB and len(sizes) > 4


def test_blocking_connect_with_delivery_pieces_and_misuse() -> None:
    def handler(channel: wschannel.sync.SyncWebSocketChannel) -> None:
        channel.sink.add(b"z" * BIG)
        channel.sink.add("end")
        for _ in channel.stream:
            pass

    with pytest.raises(ValueError, match="delivery must be"):
        wschannel.sync.serve(handler, "127.0.0.1", 0, delivery="none")  # type: ignore[arg-type]
    with sync_server(handler) as server:
        with pytest.raises(ValueError, match="delivery must be"):
            wschannel.sync.connect(url_of(server), delivery="bytes")  # type: ignore[arg-type]
        with wschannel.sync.connect(
            url_of(server), delivery="pieces", max_message_size=None
        ) as channel:
            sizes = []
            for piece in channel.fragments():
                sizes.append(len(piece.data))
                if piece.data == "end":
                    break
    assert sum(sizes) == BIG + 3 and max(sizes) <= MiB and len(sizes) > 1


@pytest.mark.parametrize("flavour", STRUCTURED)
def test_trio_and_anyio_connect_and_serve_with_delivery_pieces(flavour: str) -> None:
    async def body(library: Any) -> None:
        async def handler(channel: Any) -> None:
            sizes = []
            async for piece in channel.stream:  # pieces from the first frame
                assert type(piece) is Fragment
                sizes.append(len(piece.data))
                if piece.last:
                    channel.sink.add(json.dumps(sizes))
                    channel.sink.add(b"w" * BIG)
                    sizes = []

        async with library.serve(
            handler, "127.0.0.1", 0, delivery="pieces", max_message_size=None
        ) as server:
            url = f"ws://127.0.0.1:{server.port}"
            async with library.connect(url, delivery="pieces", max_message_size=None) as channel:
                channel.sink.add(b"v" * BIG)
                received = aiter(channel.stream)
                report = await anext(received)
                assert type(report) is Fragment and report.last
                sizes = json.loads(str(report.data))
                assert sum(sizes) == BIG and max(sizes) <= MiB and len(sizes) > 1
                total, count = 0, 0
                while True:
                    piece = await anext(received)
                    total, count = total + len(piece.data), count + 1
                    if piece.last:
                        break
                assert total == BIG and count > 1

    run_structured(flavour, body)


# The browser (wschannel.html, Pyodide): its WebSocket sends and hands over whole messages.
# What runs without a browser is checked here; tests/browser/suite.py checks the rest there.


def test_the_browser_channel_refuses_send_fragments_and_gives_messages_as_pieces() -> None:
    from wschannel import _platform
    from wschannel.html import Fragment as BrowserFragment
    from wschannel.html import HtmlWebSocketChannel

    channel = object.__new__(HtmlWebSocketChannel)  # no browser here: its methods only
    with pytest.raises(NotImplementedError, match=r"cannot send a message in fragments"):
        channel.send_fragments([b"a", b"b"])  # at the call, not when awaited
    with pytest.raises(ValueError, match=r"no limit can be set here"):
        channel.fragments(max_message_size=1000)
    with pytest.raises(ValueError, match="max_message_size must be"):
        channel.fragments(max_message_size=-1)
    assert BrowserFragment(b"x") == BrowserFragment(b"x", True) != BrowserFragment(b"x", False)
    assert repr(BrowserFragment("t")) == "Fragment('t', last=True)"
    _platform.check_browser_options({"delivery": "pieces"})  # an option it honours
    with pytest.raises(ValueError, match="delivery must be"):
        HtmlWebSocketChannel.connect("ws://127.0.0.1:1", delivery="x")  # type: ignore[arg-type]
