"""What the four echo programs (server.py, client.py, sync_server.py, sync_client.py) ask of
wschannel, in one place, through its public API only.

- ``MAX_MESSAGE_SIZE``: raised so that the 16 MiB messages of cases 9.x pass.
- Compression at level 1 instead of the default 4, with the library's other defaults: a
  client's offer (``DeflateOptions()``), and the 8 KiB windows both ways that a server
  answers ``compression=True`` with, written out here (``DeflateOptions()`` given to a server
  asks for no window limit, 15 bits, which would change the frames). tests/test_server.py
  checks that the server's answer is the same as ``compression=True``'s. Autobahn judges the
  frames and the messages, not how small the compressed frames are: every setting that
  changes a frame's shape is the default one, and the engine's code is the same at every
  level (zlib-rs does the compressing). Level 1 took our echo server's CPU in cases 12.2.10,
  12.2.11 and 13.3.10 from 10.7 s to 6.2 s beside wstest's 18 s; the compression cases are
  nearly all of the conformance step's time (docs/packaging.md, "make test's time"). The
  default level is what the test suite's compressed connections use.
"""

from __future__ import annotations

from wschannel import DeflateOptions

MAX_MESSAGE_SIZE = 64 * 1024 * 1024
LEVEL = 1
SERVER_WINDOW_BITS = 13  # a server's default with compression=True (8 KiB)
CLIENT_COMPRESSION = DeflateOptions(level=LEVEL)
SERVER_COMPRESSION = DeflateOptions(
    server_max_window_bits=SERVER_WINDOW_BITS,
    client_max_window_bits=SERVER_WINDOW_BITS,
    level=LEVEL,
)
