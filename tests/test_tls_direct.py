"""TLS in the engine (rustls): ``wss://`` on the direct socket path.

A client whose ``ssl.SSLContext`` maps to rustls (``wschannel._tls``) and a server given
``certfile=`` run TLS inside the compiled ``SocketIO``. These tests check that against both
ends of Python's ``ssl`` (a server given an ``SSLContext``, a blocking ``ssl`` socket, the
``websockets`` client), the errors (verification, host name), the close (``close_notify``,
which a Python ``ssl`` peer sees as a clean end), large messages, the handshake's deadline,
and the cases that keep asyncio's ``ssl`` transport (the fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from conftest import SHORT, TIMEOUT, wait

import wschannel
from wschannel import _direct, status
from wschannel._direct import DirectTransport
from wschannel._tls import client_config
from wschannel.exceptions import WebSocketChannelException
from wschannel.io import IOWebSocketChannel

SIZES = (0, 1, 125, 126, 65535, 65536, 16384 * 3 + 7, 1 << 20)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certfile(authority: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's key and certificate chain (for localhost and 127.0.0.1), in one file."""
    path = tmp_path_factory.mktemp("tls") / "server.pem"
    cert = authority.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


@pytest.fixture
def client_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


def server_context(authority: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(*(names or ("localhost", "127.0.0.1"))).configure_cert(context)
    return context


def transport_of(channel: IOWebSocketChannel) -> object:
    protocol = channel._transport_protocol
    assert protocol is not None
    return protocol.transport


async def echo(channel: IOWebSocketChannel) -> None:
    async for message in channel.stream:
        channel.sink.add(message)


async def echo_every_size(channel: IOWebSocketChannel) -> None:
    stream = aiter(channel.stream)
    for size in SIZES:
        binary = os.urandom(size)
        text = "é" * (size // 2)
        channel.sink.add(binary)
        channel.sink.add(text)
        assert await asyncio.wait_for(anext(stream), TIMEOUT) == binary
        assert await asyncio.wait_for(anext(stream), TIMEOUT) == text


async def connect_error(url: str, **options: object) -> BaseException:
    channel = IOWebSocketChannel.connect(url, **options)  # type: ignore[arg-type]
    with pytest.raises(WebSocketChannelException) as info:
        await asyncio.wait_for(channel.ready, TIMEOUT)
    cause = info.value.__cause__
    assert cause is not None
    return cause


async def test_both_ends_in_the_engine(certfile: Path, client_context: ssl.SSLContext) -> None:
    server_transports: list[object] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        server_transports.append(transport_of(channel))
        await echo(channel)

    async with wschannel.serve(
        handler, "127.0.0.1", 0, certfile=certfile, max_message_size=None
    ) as server:
        url = f"wss://localhost:{server.port}/"
        channel = IOWebSocketChannel.connect(url, ssl=client_context, max_message_size=None)
        await wait(channel.ready)
        transport = transport_of(channel)
        assert isinstance(transport, DirectTransport)
        assert transport.get_extra_info("cipher")[1] in ("TLSv1.2", "TLSv1.3")
        await echo_every_size(channel)
        await wait(channel.sink.close(status.NORMAL_CLOSURE, "done"))
        assert (channel.close_code, channel.close_reason) == (1000, "done")
    assert len(server_transports) == 1
    assert isinstance(server_transports[0], DirectTransport)


async def test_pipelined_messages_larger_than_the_socket_buffers(
    certfile: Path, client_context: ssl.SSLContext
) -> None:
    """Many large messages at once: the write queues (ciphertext) fill and drain in order."""
    async with wschannel.serve(
        echo, "127.0.0.1", 0, certfile=certfile, max_message_size=None, max_queue=None
    ) as server:
        url = f"wss://127.0.0.1:{server.port}/"
        channel = IOWebSocketChannel.connect(
            url, ssl=client_context, max_message_size=None, max_queue=None
        )
        await wait(channel.ready)
        messages = [os.urandom(200_000) + bytes([i]) for i in range(40)]
        for message in messages:
            channel.sink.add(message)
        stream = aiter(channel.stream)
        for message in messages:
            assert await asyncio.wait_for(anext(stream), TIMEOUT) == message
        await wait(channel.sink.close())


async def test_engine_client_against_a_python_ssl_server(
    authority: trustme.CA, client_context: ssl.SSLContext
) -> None:
    async with wschannel.serve(
        echo, "127.0.0.1", 0, ssl=server_context(authority), max_message_size=None
    ) as server:
        url = f"wss://localhost:{server.port}/"
        channel = IOWebSocketChannel.connect(url, ssl=client_context, max_message_size=None)
        await wait(channel.ready)
        assert isinstance(transport_of(channel), DirectTransport)
        await echo_every_size(channel)
        await wait(channel.sink.close(status.GOING_AWAY))
        assert channel.close_code == status.GOING_AWAY


async def test_python_ssl_client_against_an_engine_server(
    certfile: Path, client_context: ssl.SSLContext
) -> None:
    websockets = pytest.importorskip("websockets.asyncio.client")
    async with wschannel.serve(echo, "127.0.0.1", 0, certfile=certfile) as server:
        url = f"wss://localhost:{server.port}/"
        async with websockets.connect(url, ssl=client_context, max_size=None) as ws:
            for message in ("hello", b"\x00" * 100_000):
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == message


# A blocking ssl peer in a thread, to see what arrives byte by byte: after the close frames,
# the TLS session must end with close_notify (recv returns b"") and not a bare TCP close
# (ssl raises SSLEOFError: "EOF occurred in violation of protocol").


def _recv_exactly(sock: ssl.SSLSocket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError(f"the peer ended the stream after {len(data)} of {count} bytes")
        data += chunk
    return data


def _read_head(sock: ssl.SSLSocket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError("the peer ended the stream in the HTTP head")
        head += chunk
    return head


def _read_frame(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    first, second = _recv_exactly(sock, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _recv_exactly(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _recv_exactly(sock, 8))
    mask = _recv_exactly(sock, 4) if second & 0x80 else b""
    payload = _recv_exactly(sock, length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return first & 0x0F, payload


def _close_frame(code: int, *, masked: bool) -> bytes:
    payload = struct.pack("!H", code)
    if not masked:
        return bytes([0x88, len(payload)]) + payload
    mask = b"\x01\x02\x03\x04"
    return (
        bytes([0x88, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


def _end_of_stream(sock: ssl.SSLSocket) -> str:
    """How the peer ended the TLS session: "close_notify", or the error of a bare TCP close."""
    try:
        data = sock.recv(1)
    except ssl.SSLError as exc:
        return repr(exc)
    return "close_notify" if data == b"" else f"more data: {data!r}"


async def test_an_engine_server_ends_tls_with_close_notify(
    certfile: Path, client_context: ssl.SSLContext
) -> None:
    async with wschannel.serve(echo, "127.0.0.1", 0, certfile=certfile) as server:
        port = server.port

        def client() -> tuple[bytes, tuple[int, bytes], str]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            with (
                raw,
                client_context.wrap_socket(
                    raw, server_hostname="localhost", suppress_ragged_eofs=False
                ) as sock,
            ):
                sock.sendall(
                    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                head = _read_head(sock)
                sock.sendall(_close_frame(1000, masked=True))
                answer = _read_frame(sock)
                return head, answer, _end_of_stream(sock)

        head, answer, end = await asyncio.wait_for(asyncio.to_thread(client), 2 * TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert answer == (8, struct.pack("!H", 1000))
    assert end == "close_notify"


async def test_an_engine_client_ends_tls_with_close_notify(
    authority: trustme.CA, client_context: ssl.SSLContext
) -> None:
    """The server ends TLS first (it closes first, RFC 6455 §7.1.1) and waits for the
    client's close_notify, as Python's ``ssl`` does on ``unwrap``: the client sends it
    before its socket closes."""
    context = server_context(authority)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    port = listener.getsockname()[1]
    ends: list[str] = []

    def server() -> None:
        with listener, listener.accept()[0] as raw:
            raw.settimeout(TIMEOUT)
            with context.wrap_socket(raw, server_side=True) as sock:
                head = _read_head(sock).decode()
                key = next(
                    line.split(":", 1)[1].strip()
                    for line in head.split("\r\n")
                    if line.lower().startswith("sec-websocket-key:")
                )
                accept = wschannel._wschannel.sign_key(key)
                sock.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
                )
                assert _read_frame(sock) == (8, struct.pack("!H", 1000))
                sock.sendall(_close_frame(1000, masked=False))
                try:  # sends close_notify, then waits for the client's
                    sock.unwrap()
                except (ssl.SSLError, OSError) as exc:
                    ends.append(repr(exc))
                else:
                    ends.append("close_notify")

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    channel = IOWebSocketChannel.connect(f"wss://localhost:{port}/", ssl=client_context)
    await wait(channel.ready)
    assert isinstance(transport_of(channel), DirectTransport)
    channel.sink.close(1000)
    await wait(channel.sink.done)
    await asyncio.wait_for(asyncio.to_thread(thread.join, TIMEOUT), 2 * TIMEOUT)
    assert ends == ["close_notify"]
    assert channel.close_code == 1000


async def test_an_untrusted_certificate_fails_as_python_ssl_words_it(certfile: Path) -> None:
    async with wschannel.serve(echo, "127.0.0.1", 0, certfile=certfile) as server:
        # The default context: the system's CA certificates, which do not trust the test's.
        error = await connect_error(f"wss://localhost:{server.port}/")
        assert isinstance(error, ssl.SSLCertVerificationError)
        assert error.verify_code == 20
        assert error.verify_message == "unable to get local issuer certificate"
        assert "certificate verify failed: unable to get local issuer certificate" in str(error)


async def test_a_host_name_mismatch_fails_as_python_ssl_words_it(
    authority: trustme.CA, client_context: ssl.SSLContext
) -> None:
    async with wschannel.serve(
        echo, "127.0.0.1", 0, ssl=server_context(authority, "example.org")
    ) as server:
        error = await connect_error(f"wss://localhost:{server.port}/", ssl=client_context)
        assert isinstance(error, ssl.SSLCertVerificationError)
        assert error.verify_code == 62
        assert "Hostname mismatch, certificate is not valid for 'localhost'." in str(error)
        error = await connect_error(f"wss://127.0.0.1:{server.port}/", ssl=client_context)
        assert isinstance(error, ssl.SSLCertVerificationError)
        assert "IP address mismatch, certificate is not valid for '127.0.0.1'." in str(error)


async def test_a_server_goes_on_after_a_client_refused_its_certificate(
    certfile: Path, client_context: ssl.SSLContext
) -> None:
    async with wschannel.serve(echo, "127.0.0.1", 0, certfile=certfile) as server:
        url = f"wss://localhost:{server.port}/"
        assert isinstance(await connect_error(url), ssl.SSLCertVerificationError)
        channel = IOWebSocketChannel.connect(url, ssl=client_context)
        await wait(channel.ready)
        channel.sink.add("still here")
        assert await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT) == "still here"
        await wait(channel.sink.close())


async def test_a_silent_client_is_dropped_at_open_timeout(certfile: Path) -> None:
    """No ClientHello: the TLS handshake's deadline is ``open_timeout``, as with ssl=."""
    async with wschannel.serve(
        echo, "127.0.0.1", 0, certfile=certfile, open_timeout=SHORT
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        finally:
            writer.close()


async def test_garbage_instead_of_tls_is_refused(certfile: Path) -> None:
    async with wschannel.serve(echo, "127.0.0.1", 0, certfile=certfile) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), TIMEOUT)
            assert b"HTTP" not in answer  # at most a TLS alert, then the end
        finally:
            writer.close()


# The fallback: what cannot be mapped to rustls faithfully keeps asyncio's ssl transport.


@pytest.fixture
def client_certificate_server(authority: trustme.CA) -> ssl.SSLContext:
    """A server that requires a client certificate from the test's authority."""
    context = server_context(authority)
    context.verify_mode = ssl.CERT_REQUIRED
    authority.configure_trust(context)
    return context


async def test_a_client_certificate_in_the_context_is_presented(
    authority: trustme.CA,
    client_context: ssl.SSLContext,
    client_certificate_server: ssl.SSLContext,
) -> None:
    """A context's certificate cannot be read back: the engine notices the server's request
    for one and the connection is made again with Python's ssl, which presents it."""
    authority.issue_cert("client@example.org").configure_cert(client_context)
    async with wschannel.serve(echo, "127.0.0.1", 0, ssl=client_certificate_server) as server:
        url = f"wss://localhost:{server.port}/"
        channel = IOWebSocketChannel.connect(url, ssl=client_context)
        await wait(channel.ready)
        assert not isinstance(transport_of(channel), DirectTransport)
        channel.sink.add("with a certificate")
        stream = aiter(channel.stream)
        assert await asyncio.wait_for(anext(stream), TIMEOUT) == "with a certificate"
        await wait(channel.sink.close())


async def test_contexts_that_cannot_be_mapped_keep_python_ssl(
    authority: trustme.CA, certfile: Path
) -> None:
    unchecked = ssl.create_default_context()
    authority.configure_trust(unchecked)
    unchecked.check_hostname = False
    revocation = ssl.create_default_context()
    authority.configure_trust(revocation)
    revocation.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    # Trusting a certificate that is not a CA's (get_ca_certs would leave it out).
    leaf_trusted = ssl.create_default_context(cafile=str(certfile))
    assert client_config(leaf_trusted) is None
    async with wschannel.serve(echo, "127.0.0.1", 0, certfile=certfile) as server:
        url = f"wss://localhost:{server.port}/"
        for options in ({"ssl": False}, {"ssl": unchecked}):
            channel = IOWebSocketChannel.connect(url, **options)
            await wait(channel.ready)
            transport = transport_of(channel)
            assert not isinstance(transport, DirectTransport), options
            assert transport.get_extra_info("ssl_object") is not None  # type: ignore[attr-defined]
            channel.sink.add("over ssl")
            assert await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT) == "over ssl"
            await wait(channel.sink.close())
        # Revocation checks are not mapped: Python's ssl runs them (and fails without a CRL).
        error = await connect_error(url, ssl=revocation)
        assert isinstance(error, ssl.SSLCertVerificationError)
        assert "unable to get certificate CRL" in str(error)


async def test_versions_and_ciphers_of_the_context_are_honoured(
    certfile: Path, client_context: ssl.SSLContext
) -> None:
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    client_context.set_ciphers("ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305")
    async with wschannel.serve(echo, "127.0.0.1", 0, certfile=certfile) as server:
        channel = IOWebSocketChannel.connect(f"wss://localhost:{server.port}/", ssl=client_context)
        await wait(channel.ready)
        transport = transport_of(channel)
        assert isinstance(transport, DirectTransport)
        suite, version, _ = transport.get_extra_info("cipher")
        assert version == "TLSv1.2"
        assert "CHACHA20-POLY1305" in suite
        await wait(channel.sink.close())


@pytest.fixture
def direct_io_off() -> Iterator[None]:
    enabled = _direct.ENABLED
    _direct.ENABLED = False
    try:
        yield
    finally:
        _direct.ENABLED = enabled


async def test_certfile_without_direct_io_serves_with_python_ssl(
    certfile: Path, client_context: ssl.SSLContext, direct_io_off: None
) -> None:
    transports: list[object] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        transports.append(transport_of(channel))
        await echo(channel)

    async with wschannel.serve(handler, "127.0.0.1", 0, certfile=certfile) as server:
        channel = IOWebSocketChannel.connect(f"wss://localhost:{server.port}/", ssl=client_context)
        await wait(channel.ready)
        assert not isinstance(transport_of(channel), DirectTransport)
        channel.sink.add("ssl")
        assert await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT) == "ssl"
        await wait(channel.sink.close())
    assert transports and not isinstance(transports[0], DirectTransport)


async def test_tls_options_are_checked_at_the_call(certfile: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        wschannel.serve(echo, certfile=certfile, ssl=ssl.create_default_context())
    with pytest.raises(ValueError, match="keyfile= needs certfile="):
        wschannel.serve(echo, keyfile=certfile)
    with pytest.raises(FileNotFoundError):
        await wschannel.serve(echo, "127.0.0.1", 0, certfile=certfile.parent / "missing.pem")
    with pytest.raises(ValueError, match="holds no certificate"):
        empty = certfile.parent / "empty.pem"
        empty.write_text("")
        await wschannel.serve(echo, "127.0.0.1", 0, certfile=empty)


def test_both_ends_in_the_engine_on_uvloop(certfile: Path, authority: trustme.CA) -> None:
    uvloop = pytest.importorskip("uvloop")
    context = ssl.create_default_context()
    authority.configure_trust(context)
    server_transports: list[object] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        server_transports.append(transport_of(channel))
        await echo(channel)

    async def main() -> None:
        async with wschannel.serve(
            handler, "127.0.0.1", 0, certfile=certfile, max_message_size=None
        ) as server:
            url = f"wss://localhost:{server.port}/"
            channel = IOWebSocketChannel.connect(url, ssl=context, max_message_size=None)
            await wait(channel.ready)
            assert isinstance(transport_of(channel), DirectTransport)
            await echo_every_size(channel)
            await wait(channel.sink.close(status.NORMAL_CLOSURE))
            assert channel.close_code == status.NORMAL_CLOSURE

    uvloop.run(main())
    assert len(server_transports) == 1
    assert isinstance(server_transports[0], DirectTransport)


async def test_a_forged_record_fails_the_connection_not_the_server(
    certfile: Path, client_context: ssl.SSLContext
) -> None:
    """A record that does not decrypt (bytes written under the TLS session, as an on-path
    attacker would): the connection ends with 1006 and the TLS error; the server goes on."""
    closes: asyncio.Queue[int | None] = asyncio.Queue()

    async def handler(channel: IOWebSocketChannel) -> None:
        async for message in channel.stream:
            channel.sink.add(message)
        await channel.sink.done
        closes.put_nowait(channel.close_code)

    async with wschannel.serve(handler, "127.0.0.1", 0, certfile=certfile) as server:
        port = server.port

        def client() -> bytes:
            raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            with raw, client_context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(
                    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                head = _read_head(sock)
                # An application-data record of 32 bytes that no key encrypted.
                os.write(sock.fileno(), b"\x17\x03\x03\x00\x20" + bytes(32))  # under TLS
                return head

        head = await asyncio.wait_for(asyncio.to_thread(client), 2 * TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert await asyncio.wait_for(closes.get(), TIMEOUT) == status.ABNORMAL_CLOSURE
        channel = IOWebSocketChannel.connect(f"wss://localhost:{port}/", ssl=client_context)
        await wait(channel.ready)
        channel.sink.add("after")
        assert await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT) == "after"
        await wait(channel.sink.close())


def _memory_tls_client(
    sock: socket.socket, context: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A TLS client over memory buffers on a connected blocking socket, its handshake done:
    the test decides exactly which bytes go out together."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    for _ in range(20):
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                raise EOFError("the server closed during the TLS handshake") from None
            incoming.write(data)
    sock.sendall(outgoing.read())
    return tls, incoming, outgoing


async def test_bytes_after_the_peers_close_notify_are_dropped(
    certfile: Path, client_context: ssl.SSLContext
) -> None:
    """close_notify and more bytes in one segment: rustls takes nothing after the alert, and
    the engine drops the rest rather than trying again for ever; the connection ends (1006:
    no close frame), the server goes on."""
    closes: asyncio.Queue[int | None] = asyncio.Queue()

    async def handler(channel: IOWebSocketChannel) -> None:
        async for message in channel.stream:
            channel.sink.add(message)
        await channel.sink.done
        closes.put_nowait(channel.close_code)

    async with wschannel.serve(handler, "127.0.0.1", 0, certfile=certfile) as server:
        port = server.port

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
                tls, incoming, outgoing = _memory_tls_client(sock, client_context)
                tls.write(
                    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                sock.sendall(outgoing.read())
                head = b""
                while b"\r\n\r\n" not in head:
                    data = sock.recv(65536)
                    if not data:
                        raise EOFError("the server closed before its answer")
                    incoming.write(data)
                    try:
                        head += tls.read(65536)
                    except ssl.SSLWantReadError:
                        continue
                with contextlib.suppress(ssl.SSLWantReadError):
                    tls.unwrap()  # queues close_notify; the server's is not awaited
                # More than rustls reads at once (a record's worth), behind the alert.
                sock.sendall(outgoing.read() + (b"\x17\x03\x03\x40\x00" + bytes(16384)) * 4)
                return head

        head = await asyncio.wait_for(asyncio.to_thread(client), 2 * TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert await asyncio.wait_for(closes.get(), TIMEOUT) == status.ABNORMAL_CLOSURE
        channel = IOWebSocketChannel.connect(f"wss://localhost:{port}/", ssl=client_context)
        await wait(channel.ready)
        channel.sink.add("still serving")
        assert await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT) == "still serving"
        await wait(channel.sink.close())
