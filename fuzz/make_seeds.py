#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/: a few small, mostly valid inputs per
target, in the input layouts that the targets' doc comments describe.

Run from anywhere: python3 fuzz/make_seeds.py. Deterministic; it replaces the seed files
it writes and leaves other files alone.
"""

import base64
import hashlib
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def write(target, name, data):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def plan(*lengths):
    """A chunk plan: a count byte, then the lengths (see Input::plan)."""
    assert len(lengths) < 16
    return bytes([len(lengths), *lengths])


def frame(opcode, payload=b"", fin=True, rsv1=False, key=None, length=None):
    """One WebSocket frame; `length` overrides the announced payload length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    mask_bit = 0x80 if key else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    if key:
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


class Deflater:
    """permessage-deflate as a peer would send it: raw deflate, sync flush, tail removed."""

    def __init__(self, bits=15, no_context_takeover=False):
        self.bits = max(bits, 9)
        self.reset = no_context_takeover
        self.z = zlib.compressobj(6, zlib.DEFLATED, -self.bits)

    def message(self, data):
        out = self.z.compress(data) + self.z.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        if self.reset:
            self.z = zlib.compressobj(6, zlib.DEFLATED, -self.bits)
        return out[:-4]


# --- pieces: flags, window bits, limits, message limit (2), seed, plan, stream
def pieces_config(flags=0, bits=0x77, limits=0, message=0, seed=1):
    return bytes([flags, bits, limits]) + struct.pack(">H", message) + bytes([seed])


def pieces_seeds():
    server = dict(key=KEY)
    # Server: a fragmented text message whose "€" is cut between frames, a ping between,
    # chunked so that pieces end inside a character.
    stream = (
        frame(1, b"a\xe2", fin=False, **server)
        + frame(9, b"?", **server)
        + frame(0, b"\x82\xac", **server)
        + frame(2, bytes(range(256)), **server)
        + frame(8, struct.pack(">H", 1000), **server)
    )
    write("pieces", "server-text-cut-in-a-character", pieces_config() + plan(7, 1, 3) + stream)
    # Client, deflate with context takeover: a compressed message in two fragments, then
    # one over a 100-byte limit (1009 while its pieces come).
    d = Deflater()
    body = d.message(b"streamed " * 40)
    stream = frame(1, body[:10], rsv1=True, fin=False) + frame(0, body[10:])
    stream += frame(2, d.message(bytes(300)), rsv1=True)
    write(
        "pieces",
        "client-deflate-limit",
        pieces_config(flags=0x01 | 0x02, limits=2, message=100 << 8) + plan(5, 20) + stream,
    )
    # Server: whole messages first, pieces from chunk 1 on, in the middle of a message.
    stream = frame(1, b"whole", **server) + frame(2, b"x" * 100, fin=False, **server)
    stream += frame(0, b"y" * 100, **server)
    write(
        "pieces",
        "server-switch-midway",
        pieces_config(flags=0x10 | 0x20, limits=0x10) + plan(11, 50) + stream,
    )


# --- engine: flags, window bits, limits, message limit (2), frame limit, seed, plan, stream
def engine_config(flags=0, bits=0x77, limits=0, message=0, frame_limit=0, seed=1):
    return bytes([flags, bits, limits]) + struct.pack(">H", message) + bytes([frame_limit, seed])


def engine_seeds():
    server = dict(key=KEY)
    # Server: a masked text message, a ping, a close.
    stream = (
        frame(1, b"Hello", **server)
        + frame(9, b"ping", **server)
        + frame(8, struct.pack(">H", 1000) + b"bye", **server)
    )
    write("engine", "server-text-ping-close", engine_config() + plan() + stream)
    # Client (unmasked frames): a fragmented text message around a ping, 256 bytes binary.
    stream = (
        frame(1, b"Hel", fin=False)
        + frame(9, b"?")
        + frame(0, b"lo")
        + frame(2, bytes(range(256)))
        + frame(10, b"pong")
    )
    write("engine", "client-fragments-chunked", engine_config(flags=1) + plan(3, 1, 7) + stream)
    # Server with permessage-deflate and context takeover: two compressed messages.
    d = Deflater()
    stream = frame(1, d.message(b"Hello"), rsv1=True, **server)
    stream += frame(1, d.message(b"Hello"), rsv1=True, **server)
    stream += frame(2, d.message(bytes(300)), rsv1=True, fin=False, **server)[:-1]
    write("engine", "server-deflate-takeover", engine_config(flags=0x02 | 0x80) + plan(5) + stream)
    # Client, deflate with 9-bit windows and no context takeover, a 100-byte limit: the
    # second message inflates past it (1009).
    d = Deflater(bits=9, no_context_takeover=True)
    stream = frame(1, d.message(b"a" * 50), rsv1=True)
    stream += frame(1, d.message(b"b" * 200), rsv1=True)
    write(
        "engine",
        "client-deflate-small-limit",
        engine_config(flags=0x01 | 0x02 | 0x04 | 0x08, bits=0x11, limits=2, message=100 << 8)
        + plan()
        + stream,
    )
    # The fc0c37c shape: a continuation whose 64-bit length wraps the message size past 2^64.
    stream = frame(2, b"12345", fin=False, **server)
    stream += frame(0, b"x" * 40, key=KEY, length=(1 << 64) - 1)
    write("engine", "continuation-length-wraps", engine_config() + plan() + stream)
    # The same within a small limit: 60 + 50 > 100 bytes (1009).
    stream = frame(2, b"x" * 60, fin=False, **server) + frame(0, b"y" * 50, **server)
    write(
        "engine",
        "continuation-over-limit",
        engine_config(limits=2, message=100 << 8) + plan() + stream,
    )
    # Client, no message limit, reading a large frame's payload in place (read_payload_in_place).
    stream = frame(2, bytes(range(256)) * 2, length=70000)
    write(
        "engine",
        "client-in-place",
        engine_config(flags=0x01 | 0x10, limits=1) + plan(200, 0, 100) + stream,
    )
    # Server: sends each chunk as a message, closes before chunk 1, then a ping arrives.
    stream = frame(1, b"one", **server) + frame(9, b"late", **server) + frame(8, b"", **server)
    write(
        "engine",
        "server-local-close",
        engine_config(flags=0x20 | 0x40, limits=0x10) + plan(9, 10) + stream,
    )
    # Invalid UTF-8 (1007) and a frame over a 16-byte frame limit (1009).
    write("engine", "server-bad-utf8", engine_config() + plan() + frame(1, b"ok\xff", **server))
    write(
        "engine",
        "server-frame-limit",
        engine_config(limits=0x08, frame_limit=16) + plan() + frame(2, b"z" * 17, **server),
    )


def frame_header_seeds():
    seeds = {
        "text-hello": frame(1, b"Hello"),
        "masked-hello": frame(1, b"Hello", key=KEY),
        "len16": frame(2, b"", length=300)[:4],
        "len64-masked": frame(2, b"", length=70000, key=KEY)[:14],
        "len16-not-shortest": bytes([0x82, 126, 0, 5]) + b"abcde",
        "reserved-bits-opcode": bytes([0xF3, 0x00]),
        "partial": bytes([0x82, 127, 0, 0]),
        "close-1000": frame(8, struct.pack(">H", 1000)),
    }
    for name, data in seeds.items():
        write("frame_header", name, data)


# --- handshakes: max_header_size / 64 - 1, max_headers - 1, deflate flags, window bits, plan
def handshake_config(size=255, headers=63, flags=0, bits=0x22):
    return bytes([size, headers, flags, bits])


def request(lines, method=b"GET", version=b"1.1"):
    head = method + b" /chat?room=1 HTTP/" + version + b"\r\n"
    return head + b"".join(name + b": " + value + b"\r\n" for name, value in lines) + b"\r\n"


UPGRADE = [
    (b"Host", b"a.example"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"keep-alive, Upgrade"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"Sec-WebSocket-Version", b"13"),
]


def handshake_request_seeds():
    extensions = (
        b"permessage-deflate; client_max_window_bits; server_max_window_bits=10, "
        b'permessage-deflate; server_no_context_takeover; client_max_window_bits="12"'
    )
    full = [
        *UPGRADE,
        (b"Origin", b"https://a.example"),
        (b"Sec-WebSocket-Protocol", b"superchat, chat"),
        (b"Sec-WebSocket-Extensions", extensions),
    ]
    leftover = frame(1, b"Hello", key=KEY)
    write(
        "handshake_request",
        "upgrade-full",
        handshake_config(flags=0x1F) + plan() + request(full) + leftover,
    )
    write(
        "handshake_request",
        "upgrade-chunked",
        handshake_config(flags=0x06) + plan(7, 1, 30) + request(UPGRADE),
    )
    version = [(n, b"8" if n == b"Sec-WebSocket-Version" else v) for n, v in UPGRADE]
    write("handshake_request", "version-8", handshake_config() + plan() + request(version))
    write(
        "handshake_request", "post", handshake_config() + plan() + request(UPGRADE, method=b"POST")
    )
    write(
        "handshake_request",
        "http-1.0",
        handshake_config() + plan() + request(UPGRADE, version=b"1.0"),
    )
    no_key = [(n, v) for n, v in UPGRADE if n != b"Sec-WebSocket-Key"]
    write("handshake_request", "no-key", handshake_config() + plan() + request(no_key))
    write(
        "handshake_request",
        "too-large",
        handshake_config(size=1, headers=2) + plan(20) + request(full),
    )


def accept(key):
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def response(status, lines, body=b""):
    head = b"HTTP/1.1 " + status + b"\r\n"
    return head + b"".join(name + b": " + value + b"\r\n" for name, value in lines) + b"\r\n" + body


def handshake_response_seeds():
    ok = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", accept(base64.b64encode(bytes(16)))),
    ]
    ext = (
        b"Sec-WebSocket-Extensions",
        b"permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
    )
    leftover = frame(1, b"Hello")
    write(
        "handshake_response",
        "switching-deflate-chat",
        handshake_config(flags=0x30 | 0x05)
        + plan()
        + response(b"101 Switching Protocols", [*ok, (b"Sec-WebSocket-Protocol", b"chat"), ext])
        + leftover,
    )
    write(
        "handshake_response",
        "switching-chunked",
        handshake_config() + plan(5, 2, 40) + response(b"101 OK", ok),
    )
    wrong = [*ok[:2], (b"Sec-WebSocket-Accept", accept(b"other"))]
    write(
        "handshake_response",
        "wrong-accept",
        handshake_config() + plan() + response(b"101 Switching Protocols", wrong),
    )
    write(
        "handshake_response",
        "refused",
        handshake_config()
        + plan()
        + response(b"403 Forbidden", [(b"Content-Length", b"2"), (b"Connection", b"close")], b"no"),
    )
    write(
        "handshake_response",
        "unoffered-extension",
        handshake_config(flags=0x10)
        + plan()
        + response(b"101 Switching Protocols", [*ok, (b"Sec-WebSocket-Extensions", b"x-foo")]),
    )


# --- inflate: flags, window bits, limit (2), marks, fragment, plan, data
def inflate_config(flags=0, bits=0x77, limit=1 << 15, marks=0xFF, fragment=0):
    return bytes([flags, bits]) + struct.pack(">H", limit) + bytes([marks, fragment])


def inflate_seeds():
    hello = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])  # RFC 7692 §7.2.3.1
    write("inflate", "raw-hello", inflate_config() + plan() + hello)
    d = Deflater()
    two = d.message(b"Hello") + d.message(b"Hello, hello")
    write(
        "inflate", "raw-takeover-fragments", inflate_config(marks=0b1010) + plan(3, 5, 4, 10) + two
    )
    bomb = Deflater(no_context_takeover=True).message(bytes(60000))
    write("inflate", "raw-bomb", inflate_config(limit=1000) + plan() + bomb)
    text = b"The quick brown fox jumps over the lazy dog. " * 8
    write("inflate", "roundtrip", inflate_config(flags=0x01) + plan(40, 0, 200, 120) + text)
    write(
        "inflate",
        "roundtrip-small-windows-compact",
        inflate_config(flags=0x01 | 0x02 | 0x04, bits=0x10, marks=0b0110_1001, fragment=3)
        + plan(100, 7)
        + text,
    )
    write("inflate", "roundtrip-limit", inflate_config(flags=0x01, limit=64) + plan(64, 65) + text)


if __name__ == "__main__":
    engine_seeds()
    pieces_seeds()
    frame_header_seeds()
    handshake_request_seeds()
    handshake_response_seeds()
    inflate_seeds()
    total = sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(ROOT)
        for name in names
    )
    print(f"seeds in {ROOT}: {total} bytes")
