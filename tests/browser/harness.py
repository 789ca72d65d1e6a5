"""The pytest side of the Pyodide suite: the peers on 127.0.0.1 and what Pyodide is given.

:class:`Peers` runs, in the test's event loop:

- wschannel's server (:func:`wschannel.serve`), which is both the WebSocket peer and, through
  ``process_request``, the HTTP server of the page, of Pyodide's files (from npm, in
  ``node/node_modules/pyodide``) and of a zip of the pure-Python ``wschannel`` files and the
  suite (``/wschannel.zip``);
- a TCP listener that closes every connection it accepts (Dart's H8 peer);
- a silent peer: on ``/upgrade`` it accepts the WebSocket upgrade, then ignores everything
  (its close frames never come); on any other path it never answers the request.

WebSocket paths: ``/echo`` is Dart's echo fixture (every message back with its type; the text
``close`` closes with 3001 'you asked me to'); ``/greet`` says ``hello`` first, then echoes;
``/record?id=ID`` sends one JSON text with what the ``/echo`` or ``/greet`` connection opened
with ``?id=ID`` received and its close code and reason, once that connection has ended.

Every wait scales from :data:`SCALE` (``WSCHANNEL_TEST_TIMEOUT_SCALE``).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import urllib.parse
import zipfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Final, TypeVar

import wschannel
from wschannel._wschannel import Request
from wschannel.io import IOWebSocketChannel
from wschannel.server import Response, Server

from .suite import CHECKS

T = TypeVar("T")

SCALE: Final = float(os.environ.get("WSCHANNEL_TEST_TIMEOUT_SCALE", "1"))
"""The one constant every wait in this suite scales from."""
TIMEOUT: Final = 10.0 * SCALE
"""How long one step may take (Chromium starts, a check runs)."""
BOOT_TIMEOUT: Final = 9 * TIMEOUT
"""How long Pyodide may take to boot and import the suite: it compiles its ~10 MB of
WebAssembly first, which took over 30 s on a 2-core machine under load (Autobahn and the wheel
job beside it), and then every check of the module failed at set-up."""
HOST: Final = "127.0.0.1"

HERE: Final = Path(__file__).resolve().parent
PACKAGE: Final = HERE.parent.parent / "python" / "wschannel"
PYODIDE: Final = HERE / "node" / "node_modules" / "pyodide"
PAGE: Final = HERE / "page.html"
SUITE: Final = HERE / "suite.py"
SUITE_MODULE: Final = "browser_suite"
"""The name :mod:`suite` has in Pyodide's filesystem."""

CHECK_NAMES: Final = list(CHECKS)

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".zip": "application/zip",
    ".py": "text/x-python; charset=utf-8",
}


def pyodide_installed() -> bool:
    return (PYODIDE / "pyodide.asm.wasm").is_file()


def python_files() -> dict[str, Path]:
    """What goes into Pyodide's filesystem: the package's Python files (not the compiled
    module, nor its stub) and the suite, by their path there (relative to the root that goes
    on ``sys.path``)."""
    files = {
        f"wschannel/{path.relative_to(PACKAGE).as_posix()}": path
        for path in sorted(PACKAGE.rglob("*"))
        if path.is_file() and (path.suffix == ".py" or path.name == "py.typed")
    }
    files[f"{SUITE_MODULE}.py"] = SUITE
    return files


async def within(awaitable: Awaitable[T], timeout: float = TIMEOUT) -> T:
    return await asyncio.wait_for(awaitable, timeout)


def summarize(message: str | bytes) -> Any:
    """A received message as the record reports it: short text as it is, else its size."""
    if isinstance(message, str):
        return message if len(message) <= 200 else {"text": len(message)}
    return {"binary": len(message)}


class Peers:
    """wschannel's server (HTTP and WebSocket) and the closing listener, on 127.0.0.1."""

    def __init__(self) -> None:
        self.files = python_files()
        self.server: Server | None = None
        self.closer: asyncio.Server | None = None
        self.silent: asyncio.Server | None = None
        self._silent_writers: set[asyncio.StreamWriter] = set()
        self.records: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def start(self) -> None:
        self.server = await wschannel.serve(
            self.handler, HOST, 0, protocols=["chat"], process_request=self.process_request
        )
        self.closer = await asyncio.start_server(self._close_at_once, HOST, 0)
        self.silent = await asyncio.start_server(self._stay_silent, HOST, 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await within(self.server.wait_closed())
        for writer in self._silent_writers:
            writer.close()
        for listener in (self.closer, self.silent):
            if listener is not None:
                listener.close()
                await within(listener.wait_closed())

    @property
    def http_url(self) -> str:
        assert self.server is not None
        return f"http://{HOST}:{self.server.port}"

    def config(self) -> dict[str, Any]:
        """What the checks are given (suite.Config)."""
        assert self.server is not None and self.closer is not None and self.silent is not None
        closer_port = self.closer.sockets[0].getsockname()[1]
        silent_port = self.silent.sockets[0].getsockname()[1]
        return {
            "echo": f"ws://{HOST}:{self.server.port}",
            "closer": f"ws://{HOST}:{closer_port}",
            "silent": f"ws://{HOST}:{silent_port}",
            "timeout": TIMEOUT,
        }

    @staticmethod
    async def _close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def _stay_silent(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Upgrade ``/upgrade`` requests (RFC 6455 §4.2.2), then read and ignore everything;
        leave other requests unanswered. The connection ends when the client drops it."""
        self._silent_writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            if lines[0].split(" ")[1] == "/upgrade":
                key = next(
                    line.partition(":")[2].strip()
                    for line in lines
                    if line.lower().startswith("sec-websocket-key:")
                )
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                    + wschannel.sign_key(key).encode()
                    + b"\r\n\r\n"
                )
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._silent_writers.discard(writer)
            writer.close()

    def _record(self, ident: str) -> asyncio.Future[dict[str, Any]]:
        future = self.records.get(ident)
        if future is None:
            future = self.records[ident] = asyncio.get_running_loop().create_future()
        return future

    # HTTP.

    def process_request(self, request: Request) -> Response | None:
        """The page, Pyodide's files and the package's; ``None`` for the WebSocket paths."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(request.path).path)
        if path in ("/echo", "/greet", "/record"):
            return None
        if path == "/":
            return _ok(PAGE)
        if path == "/wschannel.zip":
            return 200, [("Content-Type", _TYPES[".zip"])], archive(self.files)
        if path.startswith("/pyodide/"):
            name = path[len("/pyodide/") :]
            if "/" not in name and (PYODIDE / name).is_file():
                return _ok(PYODIDE / name)
        return 404, [("Content-Type", "text/plain")], b"Not Found"

    # WebSocket.

    async def handler(self, channel: IOWebSocketChannel) -> None:
        request = channel.request
        assert request is not None
        parts = urllib.parse.urlsplit(request.path)
        ident = urllib.parse.parse_qs(parts.query).get("id", [""])[0]
        if parts.path == "/record":
            report = await within(asyncio.shield(self._record(ident)))
            channel.sink.add(json.dumps(report))
            await within(channel.sink.close(1000))
            return
        messages: list[Any] = []
        try:
            if parts.path == "/greet":
                channel.sink.add("hello")
            async for message in channel.stream:
                messages.append(summarize(message))
                if message == "close":
                    await within(channel.sink.close(3001, "you asked me to"))
                    return
                channel.sink.add(message)
        finally:
            if ident:
                future = self._record(ident)
                if not future.done():
                    future.set_result(
                        {
                            "messages": messages,
                            "close_code": channel.close_code,
                            "close_reason": channel.close_reason,
                        }
                    )


def archive(files: dict[str, Path]) -> bytes:
    """A zip of ``files`` under their paths in Pyodide's filesystem (for ``unpackArchive``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zip_file:
        for target, source in files.items():
            zip_file.write(source, target)
    return buffer.getvalue()


def _ok(path: Path) -> Response:
    content_type = _TYPES.get(path.suffix, "application/octet-stream")
    return 200, [("Content-Type", content_type), ("Cache-Control", "no-store")], path.read_bytes()


def outcome(result: Any) -> dict[str, Any]:
    """A check's result (the JSON text :func:`suite.run` returns)."""
    assert isinstance(result, str), result
    parsed: dict[str, Any] = json.loads(result)
    return parsed
