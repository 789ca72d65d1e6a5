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
        await wait_until(
            lambda: peer.stream._reading_paused and protocol._writing_paused,
            what="the server stopped reading and the client's writes wait",
        )
        # The pieces queue (4) and the socket buffers hold what was sent, far less than
        # 64 MiB; the sender waits and pulls no more chunks.
        stalled_at = pulled
        await asyncio.sleep(SHORT)
        assert pulled == stalled_at
        assert not sending.done()
        assert stalled_at < 40, stalled_at
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
