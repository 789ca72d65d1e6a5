"""The command line (``python -m wschannel``), driven as a subprocess over loopback.

``serve`` and ``connect`` run as real processes: lines go in through a pipe, messages come out
on standard output, notes on standard error, and the exit status says how it ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import TIMEOUT, wait_until
from pubsub.brokers import BrokerProcess, NatsServer, RedisServer, missing

import wschannel
from wschannel.bench import run as bench
from wschannel.channel import WebSocketChannel
from wschannel.cli import build_parser, main
from wschannel.io import IOWebSocketChannel

CLI = (sys.executable, "-m", "wschannel")
#: The connect command's quiet time after its input ends: a loaded machine's echo may take
#: long, so as long as any timeout here.
WAIT = ("--wait", str(TIMEOUT / 5))
#: How long a command may take to say it is listening or connected: a new interpreter imports
#: the package (each worker process too) and may connect to a broker first. At load 13-15 a
#: server connecting to Redis and a client each took more than TIMEOUT (a CI run; a run
#: beside it); waiting longer costs nothing when they are quick.
STARTUP = 6 * TIMEOUT
#: Environment variables that would send the clients through a proxy.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ws_proxy", "wss_proxy")


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env.update(extra)
    return env


class Command:
    """A running ``python -m wschannel ...``."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(
        cls,
        *args: str,
        stdin: int | None = asyncio.subprocess.PIPE,
        env: dict[str, str] | None = None,
    ) -> Command:
        process = await asyncio.create_subprocess_exec(
            *CLI,
            *args,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env or environment(),
        )
        return cls(process)

    async def line(self, stream: str = "stdout", timeout: float = STARTUP) -> str:
        """The next line it writes on ``stream``, without its line break. The first may
        come from a process that is still starting: see :data:`STARTUP`."""
        reader = self.process.stdout if stream == "stdout" else self.process.stderr
        assert reader is not None
        raw = await asyncio.wait_for(reader.readline(), timeout)
        assert raw, f"{stream} ended"
        return raw.decode().rstrip("\n")

    async def note_containing(self, text: str) -> str:
        """Read standard error until a line contains ``text`` (at most 20 lines)."""
        for _ in range(20):
            line = await self.line("stderr")
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} on stderr")

    def send(self, data: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data.encode())

    async def finish(
        self, data: str | None = None, timeout: float = 4 * TIMEOUT
    ) -> tuple[int, str, str]:
        """Write ``data`` (if any), close its input, wait (at most ``timeout`` seconds): the
        status, stdout and stderr."""
        if self.process.stdin is not None:
            if data:
                self.send(data)
            self.process.stdin.close()
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        assert self.process.returncode is not None
        return self.process.returncode, out.decode(), err.decode()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def run(
    *args: str, data: str = "", env: dict[str, str] | None = None, timeout: float = 4 * TIMEOUT
) -> tuple[int, str, str]:
    """Run a command to its end (at most ``timeout`` seconds) with ``data`` as its input."""
    command = await Command.start(*args, env=env)
    try:
        return await command.finish(data, timeout)
    finally:
        command.kill()


@asynccontextmanager
async def cli_server(*args: str) -> AsyncIterator[tuple[Command, str]]:
    """``wschannel serve ARGS`` on a free port: the command and the URL it printed. Stopped
    with SIGINT afterwards, which must end it with status 0."""
    server = await Command.start("serve", "--port", "0", "-v", *args, stdin=None)
    try:
        line = await server.line()
        assert line.startswith("listening on "), line
        yield server, line.removeprefix("listening on ")
        server.signal(signal.SIGINT)
        status, _, _ = await server.finish()
        assert status == 0
    finally:
        server.kill()


@asynccontextmanager
async def library_server(handler: object, **options: object) -> AsyncIterator[str]:
    """A server of the library's own in this process, for what the CLI's server does not do."""
    async with wschannel.serve(handler, "127.0.0.1", 0, **options) as server:  # type: ignore[arg-type]
        yield f"ws://127.0.0.1:{server.port}/"


def free_port() -> int:
    """A port where nothing listens (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- connect and serve ---------------------------------------------------------------------


async def test_connect_sends_each_piped_line_and_prints_the_echoes() -> None:
    async with cli_server() as (server, url):
        status, out, err = await run("connect", url, *WAIT, data="hello\n\nünï ✓\r\nlast")
        assert out.splitlines() == ["hello", "", "ünï ✓", "last"]
        assert f"connected to {url}" in err
        assert "closed: 1000 (normal closure)" in err
        assert status == 0
        closed = await server.note_containing("Closed with")  # -v: each connection, named
        assert re.search(r" wschannel\.server: #\d+ 127\.0\.0\.1:\d+: Closed with 1000 ", closed)


async def test_serve_chat_sends_each_message_to_every_other_client() -> None:
    async with cli_server("--mode", "chat") as (_, url):
        listener = await Command.start("connect", url, "--wait", "0.1")
        try:
            await listener.note_containing("connected to")
            status, out, _ = await run("connect", url, *WAIT, data="hi all\nsecond\n")
            assert (status, out) == (0, "")  # nothing comes back to the sender
            assert [await listener.line(), await listener.line()] == ["hi all", "second"]
            status, _, err = await listener.finish()
            assert status == 0, err
        finally:
            listener.kill()


async def test_serve_and_connect_over_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    server = await Command.start("serve", "--unix", str(path), stdin=None)
    try:
        line = await server.line()
        assert line.startswith(f"listening on {path} ")
        args = ("connect", "--unix", str(path), "ws://localhost/chat", *WAIT)
        assert await run(*args, data="over a file\n") == (
            0,
            "over a file\n",
            "connected to ws://localhost/chat\nclosed: 1000 (normal closure)\n",
        )
        server.signal(signal.SIGTERM)
        assert (await server.finish())[0] == 0
        assert not path.exists()  # the server removed its socket file
    finally:
        server.kill()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_serve_stops_on_a_signal_closing_each_connection_with_1001(signum: int) -> None:
    server = await Command.start("serve", "--port", "0", stdin=None)
    client = None
    try:
        url = (await server.line()).removeprefix("listening on ")
        client = await Command.start("connect", url, "--keep-open")
        await client.note_containing("connected to")
        server.signal(signum)
        assert (await server.finish())[0] == 0
        status, _, err = await client.finish()
        assert "closed: 1001 (going away)" in err
        assert status == 3
    finally:
        server.kill()
        if client is not None:
            client.kill()


async def test_connect_closes_with_1001_on_ctrl_c_and_exits_130() -> None:
    async with cli_server() as (server, url):
        client = await Command.start("connect", url)
        try:
            await client.note_containing("connected to")
            client.signal(signal.SIGINT)
            status, _, err = await client.finish()
            assert "closed: 1001 (going away)" in err
            assert status == 130
            assert "Closed with 1001" in await server.note_containing("Closed with")
        finally:
            client.kill()


async def test_connect_closes_with_1000_once_nobody_reads_its_output() -> None:
    async with cli_server() as (_, url):
        read_end, write_end = os.pipe()
        process = await asyncio.create_subprocess_exec(
            *CLI,
            "connect",
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
            env=environment(),
        )
        os.close(write_end)
        client = Command(process)
        try:
            await client.note_containing("connected to")
            client.send("first\n")
            with open(read_end, "rb") as output:  # `| head -1`
                line = await asyncio.wait_for(asyncio.to_thread(output.readline), TIMEOUT)
            assert line == b"first\n"
            client.send("second\n")  # its echo goes to a pipe nobody reads any more
            await asyncio.wait_for(process.wait(), TIMEOUT)  # with its input still open
            assert process.stderr is not None
            err = (await process.stderr.read()).decode()
            assert "closed: 1000 (normal closure)" in err
            assert "Traceback" not in err
            assert process.returncode == 0
        finally:
            client.kill()


async def test_connect_prints_binary_as_length_and_hex_and_exits_3_on_another_code() -> None:
    async def handler(channel: WebSocketChannel) -> None:
        channel.sink.add(b"\x00\x01\xff")
        channel.sink.add(bytes(range(100)))
        await channel.sink.close(4001, "that is all")

    async with library_server(handler) as url:
        status, out, err = await run("connect", url, "--keep-open")
    assert out.splitlines() == [
        "[binary, 3 bytes] 0001ff",
        f"[binary, 100 bytes] {bytes(range(32)).hex()}\N{HORIZONTAL ELLIPSIS}",
    ]
    assert "closed: 4001: that is all" in err
    assert status == 3


async def test_connect_sends_headers_and_offers_subprotocols() -> None:
    seen = []

    def remember(request: wschannel._wschannel.Request) -> None:
        seen.append((request.header("x-token"), request.header("sec-websocket-protocol")))

    async def handler(channel: WebSocketChannel) -> None:
        await channel.sink.close(1000)

    async with library_server(handler, protocols=["b"], process_request=remember) as url:
        args = ("connect", url, "-H", "X-Token: a:b c", "-s", "a", "-s", "b", "--keep-open")
        status, _, err = await run(*args)
    assert seen == [("a:b c", "a, b")]
    assert f"connected to {url} (subprotocol b)" in err
    assert status == 0


async def test_connect_without_compression_offers_none() -> None:
    offers = []

    def remember(request: wschannel._wschannel.Request) -> None:
        offers.append(request.header("sec-websocket-extensions"))

    async def handler(channel: WebSocketChannel) -> None:
        await channel.sink.close(1000)

    async with library_server(handler, process_request=remember) as url:
        await run("connect", url, "--keep-open")
        await run("connect", url, "--keep-open", "--no-compression")
    assert offers[0] is not None and "permessage-deflate" in offers[0]
    assert offers[1] is None


async def test_connect_over_tls_verifies_with_the_cafile_or_not_with_insecure(
    tmp_path: Path,
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    chain = ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem
    chain.write_to_path(str(tmp_path / "server.pem"))
    async with cli_server("--certfile", str(tmp_path / "server.pem")) as (_, url):
        assert url.startswith("wss://127.0.0.1:")
        trusted = await run("connect", url, "--cafile", str(tmp_path / "ca.pem"), *WAIT, data="a\n")
        assert trusted[:2] == (0, "a\n")
        insecure = await run("connect", url, "--insecure", *WAIT, data="b\n")
        assert insecure[:2] == (0, "b\n")
        status, out, err = await run("connect", url, *WAIT, data="c\n")
        assert (status, out) == (1, "")
        assert "CERTIFICATE_VERIFY_FAILED" in err


async def test_connect_through_an_http_proxy_given_or_from_the_environment() -> None:
    tunnels = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A CONNECT proxy (RFC 9110 §9.3.6): the request line, then bytes both ways."""
        request = await reader.readuntil(b"\r\n\r\n")
        target = request.split(b" ")[1].decode()
        tunnels.append(target)
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    proxy_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}"
    try:
        async with cli_server() as (_, url):
            target = url.removeprefix("ws://").rstrip("/")
            given = await run("connect", url, "--proxy", proxy_url, *WAIT, data="via\n")
            assert given[:2] == (0, "via\n")
            assert tunnels == [target]
            env = environment(all_proxy=proxy_url)
            from_env = await run("connect", url, *WAIT, data="env\n", env=env)
            assert from_env[:2] == (0, "env\n")
            assert tunnels == [target, target]
            direct = await run("connect", url, "--no-proxy", *WAIT, data="direct\n", env=env)
            assert direct[:2] == (0, "direct\n")
            assert len(tunnels) == 2
    finally:
        proxy_server.close()
        await proxy_server.wait_closed()


# -- errors --------------------------------------------------------------------------------


async def test_connect_rejects_a_url_that_is_not_websocket() -> None:
    status, out, err = await run("connect", "http://127.0.0.1/")
    assert (status, out) == (1, "")
    assert err == "wschannel connect: Unsupported URL scheme 'http': use ws:// or wss://.\n"


async def test_connect_says_which_url_it_could_not_reach() -> None:
    url = f"ws://127.0.0.1:{free_port()}/"
    status, out, err = await run("connect", url)
    assert (status, out) == (1, "")
    assert err.startswith("wschannel connect: could not connect")
    assert url.rstrip("/") in err
    assert "Traceback" not in err


def test_connect_tells_a_malformed_header_as_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["connect", "ws://127.0.0.1/", "-H", "no colon"])
    assert exit.value.code == 2
    assert "--header takes 'NAME: VALUE', not 'no colon'" in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_serve_says_when_it_cannot_listen(workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, out, err = await run("serve", "--port", str(port), "--workers", workers)
    assert (status, out) == (1, "")
    assert f"wschannel serve: cannot listen on 127.0.0.1 port {port}" in err


def test_serve_tells_unix_with_a_port_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["serve", "--unix", str(tmp_path / "s"), "--port", "1"])
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert "--unix listens on a socket file: it takes no --host or --port" in error


# -- workers and brokers ---------------------------------------------------------------------


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerProcess]:
    """A real redis-server or nats-server on a free port (tests/pubsub/brokers.py)."""
    if reason := missing(f"{request.param}-server"):
        pytest.skip(reason)
    with RedisServer() if request.param == "redis" else NatsServer() as server:
        yield server


class ChatClient:
    """A client of a CLI chat: what it received, read as it comes."""

    def __init__(self, url: str) -> None:
        self.channel = IOWebSocketChannel.connect(url)
        self.received: list[str] = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self.channel.stream:
            assert isinstance(message, str)
            self.received.append(message)


async def joined(server: Command, url: str) -> tuple[ChatClient, str]:
    """A client of ``server`` (``-v``), once the server logged that it joined the chat; and
    which worker took it (the log line's ``[worker N, ...]``, or ``""`` without workers)."""
    client = ChatClient(url)
    await asyncio.wait_for(client.channel.ready, TIMEOUT)
    line = await server.note_containing("a client joined the chat")
    found = re.search(r"\[(worker \d+), pid \d+\]", line)
    return client, found.group(1) if found else ""


async def chat_reaches_every_other_client(clients: list[ChatClient]) -> None:
    for index, client in enumerate(clients):
        client.channel.sink.add(f"from {index}")
    expected = [sorted(f"from {i}" for i in range(len(clients)) if i != me) for me in
                range(len(clients))]  # fmt: skip
    await wait_until(
        lambda: [sorted(client.received) for client in clients] == expected,
        2 * TIMEOUT,
        what=f"every client got every other's message (got {[c.received for c in clients]})",
    )


async def test_serve_chat_on_two_workers_fans_out_through_the_broker(
    broker: BrokerProcess,
) -> None:
    args = ("--mode", "chat", "--workers", "2", "--broker", broker.url)
    server = await Command.start("serve", "--port", "0", "-v", *args, stdin=None)
    clients: list[ChatClient] = []
    try:
        # Spawned workers import the package and connect to the broker: slow on a loaded machine.
        url = (await server.line()).removeprefix("listening on ")
        started = await server.note_containing("chat server, 2 workers (pids ")
        pids = [int(pid) for pid in re.findall(r"\d+", started.split("pids ")[1].split(")")[0])]
        assert len(pids) == 2
        landed: dict[str, int] = {}
        for _ in range(40):  # until each worker has two: the kernel spreads them at random
            client, worker = await joined(server, url)
            clients.append(client)
            landed[worker] = landed.get(worker, 0) + 1
            if len(landed) == 2 and min(landed.values()) >= 2:
                break
        assert sorted(landed) == ["worker 0", "worker 1"], landed
        assert min(landed.values()) >= 2, landed
        await chat_reaches_every_other_client(clients)

        server.signal(signal.SIGINT)  # every worker stops, closing its clients with 1001
        status, _, err = await server.finish()
        assert status == 0, err
        for client in clients:
            await asyncio.wait_for(client.reader, TIMEOUT)
            assert client.channel.close_code == 1001
        for pid in pids:  # no worker left behind
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        server.kill()
        await server.process.wait()
        for client in clients:
            client.reader.cancel()


async def test_two_chat_servers_on_one_broker_are_one_chat(broker: BrokerProcess) -> None:
    args = ("--mode", "chat", "--broker", broker.url)
    async with cli_server(*args) as (one, one_url), cli_server(*args) as (two, two_url):
        clients = [
            (await joined(one, one_url))[0],
            (await joined(two, two_url))[0],
            (await joined(two, two_url))[0],
        ]
        try:
            await chat_reaches_every_other_client(clients)
        finally:
            for client in clients:
                await client.channel.sink.close()


async def test_serve_echo_on_two_workers_stops_on_sigterm() -> None:
    server = await Command.start("serve", "--port", "0", "--workers", "2", stdin=None)
    try:
        url = (await server.line()).removeprefix("listening on ")
        status, out, _ = await run("connect", url, *WAIT, data="one\ntwo\n")
        assert (status, out) == (0, "one\ntwo\n")
        server.signal(signal.SIGTERM)
        assert (await server.finish())[0] == 0
    finally:
        server.kill()
        await server.process.wait()


async def test_serve_wss_on_two_workers_each_making_its_tls_context(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    chain = ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem
    chain.write_to_path(str(tmp_path / "server.pem"))
    args = ("--port", "0", "--workers", "2", "--certfile", str(tmp_path / "server.pem"))
    server = await Command.start("serve", *args, stdin=None)
    try:
        url = (await server.line()).removeprefix("listening on ")
        assert url.startswith("wss://127.0.0.1:")
        for text in ("one", "two", "three"):  # over either worker: each has the certificate
            status, out, err = await run(
                "connect", url, "--cafile", str(tmp_path / "ca.pem"), *WAIT, data=f"{text}\n"
            )
            assert (status, out) == (0, f"{text}\n"), err
        server.signal(signal.SIGTERM)
        assert (await server.finish())[0] == 0
    finally:
        server.kill()
        await server.process.wait()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_serve_says_when_it_cannot_reach_the_broker(workers: str) -> None:
    broker = f"redis://127.0.0.1:{free_port()}"
    args = ("--mode", "chat", "--workers", workers, "--broker", broker)
    status, out, err = await run("serve", "--port", "0", *args)
    assert (status, out) == (1, "")
    assert err.startswith("wschannel serve: ")
    assert f"Cannot reach Redis at {broker}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--workers", "2", "--mode", "chat"], "--mode chat with --workers needs --broker"),
        (["--broker", "redis://127.0.0.1:1"], "--broker carries the chat's messages"),
        (["--mode", "chat", "--broker", "http://x"], "--broker takes redis://HOST:PORT"),
        (["--workers", "2", "--unix", "/tmp/s"], "--workers share a TCP port"),
        (["--workers", "0"], "workers are from 1 to 256, not 0"),
        (["--workers", "many"], "a number of workers, or auto; not 'many'"),
    ],
)
def test_serve_tells_workers_and_broker_misuse_as_usage_errors(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["serve", *args])
    assert exit.value.code == 2
    assert error in capsys.readouterr().err


def test_serve_workers_auto_is_one_per_cpu() -> None:
    args = build_parser().parse_args(["serve", "--workers", "auto"])
    assert args.workers == (os.cpu_count() or 1)


# -- bench ---------------------------------------------------------------------------------


async def test_bench_runs_a_short_comparison_with_a_progress_bar_and_plots(
    tmp_path: Path,
) -> None:
    pytest.importorskip("matplotlib")
    args = ["--sections", "echo", "--variants", "plain", "--sizes", "256", "--modes", "1"]
    args += ["--impls", "wschannel,raw-tcp", "--reps", "1", "--warmup", "0.05", "--duration", "0.1"]
    status, _, err = await run("bench", "--quick", *args, "--out", str(tmp_path))
    assert status == 0, err
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["impl"] for r in records if r["section"] == "echo"] != []
    assert {r["impl"] for r in records if r["section"] == "echo"} == {"wschannel", "raw-tcp"}
    assert all(r["msgs_per_s"] > 0 for r in records if r["section"] == "echo")
    steps = [line for line in err.splitlines() if "echo plain" in line]
    assert len(steps) == 2
    assert steps[-1].startswith("\N{FULL BLOCK}" * bench.Progress.BAR_WIDTH + "    2/2 100%")
    assert (tmp_path / "echo_plain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| cell | wschannel | raw-tcp |" in (tmp_path / "table.md").read_text()


@pytest.mark.timeout(240)
async def test_bench_quick_cut_short_runs_every_section_and_writes_its_files(
    tmp_path: Path,
) -> None:
    """What ``bench --quick`` does, every section of it, as a subprocess, with options that
    keep it short enough for CI: one pair of implementations, one size, 0.1 s windows, 10
    connections. The files it writes are checked, not the numbers (no timing here)."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("picows")
    args = ["--impls", "wschannel,picows", "--variants", "plain", "--sizes", "256"]
    args += ["--modes", "1", "--reps", "1", "--warmup", "0.05", "--duration", "0.1"]
    args += ["--load-connections", "10", "--memory-connections", "10"]
    args += ["--broadcast-connections", "10"]
    command = await Command.start("bench", "--quick", *args, "--out", str(tmp_path))
    try:
        _, err = await asyncio.wait_for(command.process.communicate(), 200)
    finally:
        command.kill()
    assert command.process.returncode == 0, err.decode()
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    sections = {r["section"] for r in records}
    assert {"echo", "compression", "load", "broadcast", "memory"} <= sections, sections
    assert {r["impl"] for r in records if r["section"] == "echo"} == {"wschannel", "picows"}
    counts = {r["connections"] for r in records if r["section"] in ("load", "broadcast")}
    assert counts == {10}, counts
    table = (tmp_path / "table.md").read_text()
    assert "| cell | wschannel | picows |" in table
    for plot in ("echo_plain.png", "ratio_to_picows.png", "servers.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    assert b"Traceback" not in err


def test_bench_tells_a_bad_broadcast_connections_as_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit:
        bench.parse_args(["--broadcast-connections", "10,20"])
    assert exit.value.code == 2
    assert "--broadcast-connections takes one number" in capsys.readouterr().err
    assert bench.parse_args(["--quick", "--broadcast-connections", "7"]).broadcast_connections == 7
    assert bench.parse_args(["--quick"]).broadcast_connections == 250


def test_bench_skips_what_is_not_installed_with_a_line_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    absent = {"picows", "uvloop", "matplotlib"}
    monkeypatch.setattr(bench, "module_found", lambda module: module.split(".")[0] not in absent)
    settings = bench.parse_args([])
    kept, notes = bench.without_missing(settings)
    assert "picows" not in kept.impls
    assert "websocket-client" not in kept.impls  # its server is picows's
    assert {"wschannel", "websockets", "aiohttp", "raw-tcp"} <= set(kept.impls)
    assert "uvloop" not in [v.name for v in kept.variants]
    assert "load" not in kept.sections and "broadcast" not in kept.sections
    assert "skipping picows: picows is not installed (pip install picows)" in notes
    assert "skipping websocket-client: picows is not installed (pip install picows)" in notes
    assert "skipping the uvloop variant: uvloop is not installed (pip install uvloop)" in notes
    assert any(n.startswith("skipping load and broadcast: the load generator") for n in notes)
    assert any(n.startswith("no plots: matplotlib is not installed") for n in notes)


def test_bench_tells_an_implementation_asked_for_but_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "module_found", lambda module: module != "aiohttp")
    with pytest.raises(SystemExit) as exit:
        bench.parse_args(["--impls", "wschannel,aiohttp"])
    assert exit.value.code == 2
    assert "aiohttp needs aiohttp: pip install aiohttp" in capsys.readouterr().err


@pytest.mark.skipif(
    os.environ.get("WSCHANNEL_BENCH_QUICK") != "1",
    reason="the whole of bench --quick takes two minutes: set WSCHANNEL_BENCH_QUICK=1",
)
@pytest.mark.timeout(300)
async def test_bench_quick_runs_every_section_in_about_two_minutes(tmp_path: Path) -> None:
    started = time.monotonic()
    status, _, err = await run("bench", "--quick", "--out", str(tmp_path), timeout=290)
    seconds = time.monotonic() - started
    assert status == 0, err
    sections = {json.loads(line)["section"] for line in (tmp_path / "results.jsonl").open()}
    assert {"echo", "compression", "load", "broadcast", "memory"} <= sections
    assert (tmp_path / "servers.png").exists()
    assert seconds < 150, f"bench --quick took {seconds:.0f} s"


def test_the_console_script_runs_the_command_line() -> None:
    script = Path(sys.executable).with_name("wschannel")
    if not script.exists():
        pytest.skip("the console script is installed by `make dev` (pip install)")
    import subprocess

    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0
    assert done.stdout.startswith("wschannel ")
