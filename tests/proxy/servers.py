"""Real proxies for tests/test_proxy.py, started by the tests on free loopback ports and
stopped by them: Debian's ``tinyproxy`` (HTTP ``CONNECT``) and ``danted`` (dante-server,
SOCKS5), each from its configuration template beside this file written to a temporary
directory, and :class:`TlsTerminator` (TLS in front of tinyproxy, for ``https://``
proxies; tinyproxy speaks no TLS and Debian has no small TLS-terminating proxy that needs no
service of its own, so it is written here with asyncio and ssl).

``tests/proxy/setup.sh`` installs the packages and creates the system user of danted's
username method (:data:`SOCKS_USER`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import ssl
import string
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from conftest import wait_until_sync

HERE = Path(__file__).parent

SOCKS_USER = "wschannel-proxy-test"
SOCKS_PASSWORD = "wschannel-proxy-test-password"
"""The system user danted's ``username`` method checks (created by setup.sh)."""

HTTP_USER = "proxyuser"
HTTP_PASSWORD = "s3cretWord"  # tinyproxy takes letters and digits only
"""tinyproxy's ``BasicAuth`` credentials when a test asks for them."""

START_TIMEOUT = 10.0
"""Seconds a proxy has to start listening."""


def free_port() -> int:
    """A loopback TCP port nobody listens on (as the kernel sees it now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing(program: str, package: str) -> str | None:
    """Why a proxy cannot run here, or ``None``: for ``pytest.skip``."""
    if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
        return f"{program} is not installed: run tests/proxy/setup.sh (Debian's {package})"
    return None


def socks_user_missing() -> str | None:
    """Why danted's username method cannot be tested here, or ``None``."""
    if os.geteuid() != 0:
        return "danted checks RFC 1929 passwords against /etc/shadow: needs root"
    try:
        pwd.getpwnam(SOCKS_USER)
    except KeyError:
        return f"the system user {SOCKS_USER} is missing: run tests/proxy/setup.sh"
    return None


def _executable(program: str) -> str:
    return shutil.which(program) or str(Path("/usr/sbin", program))


class ProxyProcess:
    """A proxy process on a loopback port, with its configuration and log in ``directory``."""

    def __init__(self, scheme: str, port: int, directory: Path, args: Sequence[str]) -> None:
        self.scheme = scheme
        self.port = port
        self.directory = directory
        self.log_path = directory / "proxy.log"
        with self.log_path.open("wb") as output:
            self.process = subprocess.Popen(
                args, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def url(self, user: str | None = None, password: str | None = None, scheme: str = "") -> str:
        """The proxy's URL, with ``user:password@`` if given."""
        from urllib.parse import quote

        credentials = "" if user is None else f"{quote(user)}:{quote(password or '')}@"
        return f"{scheme or self.scheme}://{credentials}127.0.0.1:{self.port}"

    def _wait_listening(self) -> None:
        def listening() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.scheme} proxy exited at start: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_until_sync(listening, START_TIMEOUT, what=f"the {self.scheme} proxy listened")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def log(self) -> str:
        """The proxy's own log (its requests)."""
        texts = [path.read_text(errors="replace") for path in self.directory.glob("*.log")]
        return "\n".join(texts)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(START_TIMEOUT)


def _configure(template: str, directory: Path, **fields: object) -> Path:
    text = string.Template((HERE / template).read_text()).safe_substitute(
        dir=directory, **{name: str(value) for name, value in fields.items()}
    )
    path = directory / template
    path.write_text(text)
    return path


@contextlib.contextmanager
def tinyproxy(
    *, credentials: bool = False, connect_ports: Sequence[int] = ()
) -> Iterator[ProxyProcess]:
    """tinyproxy on a free port: with :data:`HTTP_USER`'s Basic credentials required if
    ``credentials``; CONNECT limited to ``connect_ports`` if any (others: 403)."""
    rules = [f"ConnectPort {port}" for port in connect_ports]
    if credentials:
        rules.append(f"BasicAuth {HTTP_USER} {HTTP_PASSWORD}")
    with tempfile.TemporaryDirectory(prefix="wschannel-tinyproxy-") as name:
        directory = Path(name)
        directory.chmod(0o755)  # tinyproxy may drop to nobody and still write its log
        port = free_port()
        config = _configure("tinyproxy.conf", directory, port=port, rules="\n".join(rules))
        proxy = ProxyProcess(
            "http", port, directory, [_executable("tinyproxy"), "-d", "-c", str(config)]
        )
        try:
            yield proxy
        finally:
            proxy.stop()


@contextlib.contextmanager
def danted(
    *, method: str = "none", blocked_port: int = 1, debug: bool = False
) -> Iterator[ProxyProcess]:
    """danted on a free port: ``method`` ``none`` or ``username`` (:data:`SOCKS_USER`);
    connections to ``blocked_port`` refused by its rules, and to anything off loopback;
    ``debug`` logs each request's address as received (ATYP and name or IP)."""
    users = ""
    if os.geteuid() == 0:
        users = "user.privileged: root\nuser.unprivileged: nobody"
    with tempfile.TemporaryDirectory(prefix="wschannel-danted-") as name:
        directory = Path(name)
        directory.chmod(0o755)
        port = free_port()
        config = _configure(
            "danted.conf",
            directory,
            port=port,
            method=method,
            users=users,
            blocked_port=blocked_port,
            debug=1 if debug else 0,
        )
        pid_file = directory / "danted.pid"
        args = [_executable("danted"), "-f", str(config), "-p", str(pid_file), "-N", "1"]
        proxy = ProxyProcess("socks5", port, directory, args)
        try:
            yield proxy
        finally:
            proxy.stop()


class TlsTerminator:
    """A TLS server on a free loopback port that relays each connection, decrypted, to
    ``127.0.0.1:upstream_port`` (tinyproxy): an ``https://`` proxy. Runs in a thread's
    event loop, for asyncio and blocking tests alike; counts the connections it relayed."""

    def __init__(self, upstream_port: int, context: ssl.SSLContext) -> None:
        self.upstream_port = upstream_port
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=context), self.loop
        ).result(START_TIMEOUT)
        self.port = int(self.server.sockets[0].getsockname()[1])

    def url(self, user: str | None = None, password: str | None = None) -> str:
        from urllib.parse import quote

        credentials = "" if user is None else f"{quote(user)}:{quote(password or '')}@"
        return f"https://{credentials}127.0.0.1:{self.port}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._copy(reader, up_writer, half_close=True),
            self._copy(up_reader, writer, half_close=False),
        )

    @staticmethod
    async def _copy(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, half_close: bool
    ) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
            if half_close and writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (OSError, ssl.SSLError):
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(START_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(START_TIMEOUT)
        self.loop.close()
