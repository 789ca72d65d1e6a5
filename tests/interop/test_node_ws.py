"""wschannel's client with the server of Node's ``ws`` (``node/echo_server.mjs``), over plain
TCP and over TLS (``wss``: Node's TLS against wschannel's, in the engine).

The server reports what it received (type, length and SHA-256 of each message, and the close
frame) as JSON lines on its stdout. ``tests/interop/setup.sh`` installs ``ws`` with ``npm ci``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from wschannel.channel import Message

from .conftest import (
    CLIENT_CLOSE_CODE,
    CLIENT_CLOSE_REASON,
    CLOSE_COMMAND,
    CLOSED_BY_SERVER,
    COMPRESSION,
    HOST,
    MESSAGES,
    SERVER_CLOSE_CODE,
    SERVER_CLOSE_REASON,
    Tls,
    check_messages,
    has_deflate,
    run_wschannel_client,
    within,
)

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (NODE_DIR / "node_modules" / "ws").is_dir(),
    reason="Node.js or its ws package is missing: run tests/interop/setup.sh",
)


class NodeServer:
    """The ``ws`` echo server in a child process, and the events it reports."""

    def __init__(
        self, process: asyncio.subprocess.Process, client_ssl: ssl.SSLContext | None
    ) -> None:
        self.process = process
        self.port = 0
        self.client_ssl = client_ssl
        """The context a client trusts this server with (over TLS), else None."""

    @property
    def url(self) -> str:
        return f"{'ws' if self.client_ssl is None else 'wss'}://{HOST}:{self.port}/echo"

    async def next_event(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await within(self.process.stdout.readline())
        assert line, "the ws server exited"
        event: dict[str, Any] = json.loads(line)
        return event

    async def connection(self) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        """The events of the next connection: its opening, its messages, its close."""
        opening = await self.next_event()
        assert opening["event"] == "open", opening
        messages = []
        while (event := await self.next_event())["event"] == "message":
            messages.append(event)
        assert event["event"] == "close", event
        return opening, messages, event


def summary(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """What the server reports for ``messages``."""
    reports = []
    for message in messages:
        data = message.encode() if isinstance(message, str) else message
        reports.append(
            {
                "event": "message",
                "binary": isinstance(message, bytes),
                "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return reports


@pytest.fixture(params=["ws", "wss"])
def scheme(request: pytest.FixtureRequest) -> str:
    """Every test here over plain TCP and over TLS."""
    return str(request.param)


@pytest.fixture
async def node_server(scheme: str, request: pytest.FixtureRequest) -> AsyncIterator[NodeServer]:
    assert NODE is not None
    config = {
        "closeCommand": CLOSE_COMMAND,
        "closeCode": SERVER_CLOSE_CODE,
        "closeReason": SERVER_CLOSE_REASON,
    }
    files: Tls | None = request.getfixturevalue("tls") if scheme == "wss" else None
    if files is not None:
        config["cert"] = str(files.certfile)
        config["key"] = str(files.keyfile)
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(NODE_DIR / "echo_server.mjs"),
        json.dumps(config),
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        server = NodeServer(process, None if files is None else files.client)
        listening = await server.next_event()
        assert listening["event"] == "listening", listening
        server.port = listening["port"]
        yield server
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            await within(process.wait())
        except TimeoutError:
            process.kill()
            await process.wait()
        with contextlib.suppress(ProcessLookupError):
            process.kill()


@COMPRESSION
async def test_wschannel_client_echoes_through_node_ws_server(
    node_server: NodeServer, compression: bool
) -> None:
    received, code, reason = await run_wschannel_client(
        node_server.url, compression=compression, close_first=True, ssl=node_server.client_ssl
    )
    check_messages(received, MESSAGES)
    # ws echoes the close frame it received.
    assert (code, reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    opening, messages, close = await node_server.connection()
    assert has_deflate(opening["offered"]) is compression
    assert has_deflate(opening["extensions"]) is compression
    assert messages == summary(MESSAGES)
    assert (close["code"], close["reason"]) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)


@COMPRESSION
async def test_wschannel_client_receives_close_from_node_ws_server(
    node_server: NodeServer, compression: bool
) -> None:
    received, code, reason = await run_wschannel_client(
        node_server.url, compression=compression, close_first=False, ssl=node_server.client_ssl
    )
    check_messages(received, CLOSED_BY_SERVER[:2])
    assert (code, reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    opening, messages, close = await node_server.connection()
    assert has_deflate(opening["extensions"]) is compression
    assert messages == summary(CLOSED_BY_SERVER)
    # wschannel echoes the code and reason of the close it received (design.md decision 4).
    assert (close["code"], close["reason"]) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
