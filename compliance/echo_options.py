"""What the four echo programs (server.py, client.py, sync_server.py, sync_client.py) ask of
wschannel, in one place.

- ``MAX_MESSAGE_SIZE``: raised so that the 16 MiB messages of cases 9.x pass.
- Compression at level 1 instead of the default 6, with the library's other defaults (a
  server's 4 KiB windows, a client's offer). Autobahn judges the frames and the messages,
  not how small the compressed frames are: every setting that changes a frame's shape is the
  default one, and the engine's code is the same at every level (zlib-rs does the
  compressing). Level 1 took our echo server's CPU in cases 12.2.10, 12.2.11 and 13.3.10
  from 10.7 s to 6.2 s beside wstest's 18 s; the compression cases are nearly all of the
  conformance step's time (docs/packaging.md, "make test's time"). The default level is
  what the test suite's compressed connections use.
"""

from __future__ import annotations

from wschannel import DeflateOptions
from wschannel._net import SERVER_WINDOW_BITS

MAX_MESSAGE_SIZE = 64 * 1024 * 1024
LEVEL = 1
CLIENT_COMPRESSION = DeflateOptions(level=LEVEL)
SERVER_COMPRESSION = DeflateOptions(
    server_max_window_bits=SERVER_WINDOW_BITS,
    client_max_window_bits=SERVER_WINDOW_BITS,
    level=LEVEL,
)
