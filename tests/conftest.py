"""Shared fixtures: servers on 127.0.0.1, and the one constant every timeout scales from.

Set ``WSCHANNEL_TEST_TIMEOUT_SCALE`` (e.g. ``4``) to stretch every timeout on a slow machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
import sysconfig
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import pytest

import wschannel
import wschannel._wschannel
from wschannel.io import IOWebSocketChannel
from wschannel.server import Server

SCALE = float(os.environ.get("WSCHANNEL_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT = 5.0 * SCALE
"""How long something that should happen may take."""
SHORT = 0.2 * SCALE
"""How long to wait for something that should not happen, or a short interval."""
POLL = 0.005
"""How often :func:`wait_until` and :func:`wait_until_sync` look at their condition."""

T = TypeVar("T")


class _SkipOnUse(types.ModuleType):
    """Stands for a test dependency that cannot be installed here: the test or fixture that
    uses it skips, saying why."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        pytest.skip(f"{self.__name__} cannot be installed on this Python (WSCHANNEL_TEST_WITHOUT)")


# The wheel job (.ci/wheels.sh) names the test dependencies an interpreter cannot install
# (free-threaded CPython 3.13: trustme needs cryptography, whose cffi does not support that
# build; hypothesis's engine needs a PyO3 that supports it from 3.14 only). The TLS tests
# skip; the property tests are left out. Anywhere else a missing dependency fails as usual.
WITHOUT = set(os.environ.get("WSCHANNEL_TEST_WITHOUT", "").split())
if "trustme" in WITHOUT:
    sys.modules["trustme"] = _SkipOnUse("trustme")
collect_ignore = ["test_properties.py"] if "hypothesis" in WITHOUT else []


# The suite in two parts (WSCHANNEL_TEST_PART), together the whole of it. "peers": the tests
# that need the peers and tools only the source tree's environment has (Chromium, Node,
# Pyodide, the interoperability peers, the repository's compliance and benchmark tools);
# "package": every other test, which the wheel job (.ci/wheels.sh) runs against each
# installed wheel. `make test` runs the peers part from the source tree and the package part
# in the wheel job, so no test runs twice; unset (make test-python), the whole suite runs.
PEER_PATHS = (
    "interop",
    "browser",
    "test_compliance_runner.py",
    "test_benchmarks_smoke.py",
    "test_pubsub_bench.py",
)
PART = os.environ.get("WSCHANNEL_TEST_PART", "")
if PART not in ("", "peers", "package"):
    raise RuntimeError(f"WSCHANNEL_TEST_PART={PART!r}: use peers, package, or leave it unset")


def is_peer_test(item: pytest.Item) -> bool:
    """Whether a test belongs to the "peers" part (see :data:`PEER_PATHS`)."""
    relative = os.path.relpath(str(item.path), os.path.dirname(__file__))
    # As `-k browser` selects: a case-insensitive part of any of the test's names.
    in_browser = any("browser" in str(keyword).lower() for keyword in item.keywords)
    return relative.split(os.sep)[0] in PEER_PATHS or in_browser


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not PART:
        return
    wanted = PART == "peers"
    keep = [item for item in items if is_peer_test(item) == wanted]
    dropped = [item for item in items if is_peer_test(item) != wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


# CPU per test: each test's process time (setup, call and teardown; every thread of the
# process that ran it: with pytest-xdist, its worker) rides on its teardown report, and the
# summary lists the costliest, so that what makes a suite slow shows in every run's log.
CPU_SHOWN = int(os.environ.get("WSCHANNEL_TEST_CPU_SHOWN", "12"))
_cpu_start = pytest.StashKey[float]()
_cpu_spent: list[tuple[float, str]] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> object:
    item.stash[_cpu_start] = time.process_time()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    if call.when == "teardown" and _cpu_start in item.stash:
        item.user_properties.append(("cpu", time.process_time() - item.stash[_cpu_start]))
    return (yield)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        for name, value in report.user_properties:
            if name == "cpu" and isinstance(value, float):
                _cpu_spent.append((value, report.nodeid))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _cpu_spent or CPU_SHOWN <= 0:
        return
    total = sum(cpu for cpu, _ in _cpu_spent)
    terminalreporter.section(f"CPU: {total:.0f} s in tests; the {CPU_SHOWN} costliest")
    for cpu, nodeid in sorted(_cpu_spent, reverse=True)[:CPU_SHOWN]:
        terminalreporter.write_line(f"{cpu:7.2f} s  {nodeid}")


def installed_from() -> str:
    """Where ``wschannel`` and its engine were imported from."""
    return f"{os.path.dirname(wschannel.__file__)} (engine {wschannel._wschannel.__file__})"


def pytest_report_header() -> list[str]:
    lines = [f"wschannel: {installed_from()}"]
    if PART:
        lines.append(f"part of the suite: {PART} (WSCHANNEL_TEST_PART)")
    if WITHOUT:
        lines.append(f"without (cannot be installed here): {', '.join(sorted(WITHOUT))}")
    return lines


def pytest_configure() -> None:
    """``WSCHANNEL_TEST_INSTALLED=1`` (the wheel job, .ci/wheels.sh): the suite must run
    against the installed package, so ``wschannel`` must come from site-packages, not from
    the source tree's ``python/``."""
    if os.environ.get("WSCHANNEL_TEST_INSTALLED") != "1":
        return
    site = {os.path.realpath(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    for module in (wschannel.__file__, wschannel._wschannel.__file__):
        where = os.path.realpath(module or "")
        if not any(os.path.commonpath([where, root]) == root for root in site):
            raise pytest.UsageError(
                f"WSCHANNEL_TEST_INSTALLED=1 but {where} is not in site-packages "
                f"({', '.join(sorted(site))}): run pytest from outside the source tree"
            )


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(channel: IOWebSocketChannel) -> None:
    """Dart's echo server: sends every message back, and closes with 3001 on ``close``."""
    async for message in channel.stream:
        if message == "close":
            await channel.sink.close(3001, "you asked me to")
            return
        channel.sink.add(message)


@pytest.fixture
async def echo_server() -> AsyncIterator[Server]:
    async with wschannel.serve(echo, "127.0.0.1", 0) as server:
        yield server


@pytest.fixture
def echo_url(echo_server: Server) -> str:
    return f"ws://127.0.0.1:{echo_server.port}"


async def next_message(subscription: AsyncIterator[T]) -> T:
    """The next message, or ``TimeoutError`` after :data:`TIMEOUT`."""
    return await asyncio.wait_for(anext(subscription), TIMEOUT)


async def wait(awaitable: Awaitable[object]) -> None:
    """Await within :data:`TIMEOUT`."""
    await asyncio.wait_for(awaitable, TIMEOUT)


async def wait_until(
    condition: Callable[[], object], timeout: float = TIMEOUT, *, what: str = "the condition held"
) -> None:
    """Wait (in the event loop) until ``condition()`` is true: for a state the code under
    test reaches on its own, with nothing to await. ``AssertionError`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"waited {timeout} s, but not until {what}")
        await asyncio.sleep(POLL)


def wait_until_sync(
    condition: Callable[[], object], timeout: float = TIMEOUT, *, what: str = "the condition held"
) -> None:
    """:func:`wait_until` for a thread that may block: polls with ``time.sleep``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s, but not until {what}")
        time.sleep(POLL)


async def read_request(reader: asyncio.StreamReader) -> dict[str, str]:
    """Read an HTTP request head; its headers, with lower-case names."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


async def accept_upgrade(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, protocol: str | None = None
) -> None:
    """Answer a WebSocket upgrade by hand (RFC 6455 §4.2.2), with no extension."""
    headers = await read_request(reader)
    accept = wschannel.sign_key(headers["sec-websocket-key"])
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
    )
    if protocol is not None:
        response += f"Sec-WebSocket-Protocol: {protocol}\r\n"
    writer.write((response + "\r\n").encode())
    await writer.drain()


class RawServer:
    """A TCP server on 127.0.0.1 running ``handler`` per connection, for misbehaving peers."""

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawHandler], Awaitable[RawServer]]]:
    """Start :class:`RawServer` instances; all are stopped after the test."""
    servers: list[RawServer] = []

    async def start(handler: RawHandler) -> RawServer:
        server = RawServer(handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


# Raw frames, for peers that speak WebSocket by hand (RFC 6455 §5.2).


def frame(opcode: int, payload: bytes = b"", *, mask: bytes | None = None, rsv: int = 0) -> bytes:
    """One short frame (payload under 126 bytes), FIN set, masked when ``mask`` is given."""
    assert len(payload) < 126
    head = bytes([0x80 | rsv | opcode, (0x80 if mask else 0) | len(payload)])
    if mask is None:
        return head + payload
    return head + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one short frame (masked or not): its first byte and its payload."""
    first, second = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    payload = await reader.readexactly(second & 0x7F)
    return first, bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


async def open_raw_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP client that has done the opening handshake by hand, with no extension."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def unmask(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one short masked frame from a client: its first byte and its payload."""
    first, second = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    assert second & 0x80, "a client must mask its frames"
    mask = await reader.readexactly(4)
    payload = await reader.readexactly(second & 0x7F)
    return first, bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def close_then_hang_up(
    code: int,
    reason: str = "",
    *,
    messages: Sequence[str] = (),
    linger: float = 0.0,
    hung_up: asyncio.Event | None = None,
) -> RawHandler:
    """A raw server's handler that answers the upgrade, sends ``messages`` (text) and a close
    frame, checks that the client's masked answer echoes it, keeps TCP open ``linger`` more
    seconds, then sets ``hung_up`` and closes TCP.

    ``linger`` is a slow peer on purpose (time is the point): it opens a window in which a
    client that ended its stream at the close frame, not at the EOF, would be caught."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        for message in messages:
            writer.write(frame(0x1, message.encode()))
        writer.write(frame(0x8, close_payload(code, reason)))
        assert await unmask(reader) == (0x88, close_payload(code, reason))
        await asyncio.sleep(linger)
        if hung_up is not None:
            hung_up.set()
        writer.close()

    return handler
