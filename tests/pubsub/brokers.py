"""Real brokers for tests/test_pubsub*.py and benchmarks/pubsub.py: Debian's ``redis-server``
and ``nats-server``, started on free loopback ports in temporary directories and stopped by
whoever started them (``tests/pubsub/setup.sh`` installs them). A broker can be stopped and
started again on the same port (a restart), with or without its data.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

START_TIMEOUT = 10.0
"""Seconds a broker has to start answering."""


def free_port() -> int:
    """A loopback TCP port nobody listens on (as the kernel sees it now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def program(name: str) -> str | None:
    """The path of ``name`` (on PATH, or in /usr/sbin or /usr/bin), or ``None``."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/bin"):
        if Path(folder, name).exists():
            return str(Path(folder, name))
    return None


def missing(name: str) -> str | None:
    """Why the broker ``name`` cannot run here, or ``None``: for ``pytest.skip``."""
    if program(name) is None:
        return f"{name} is not installed: run tests/pubsub/setup.sh (Debian's {name})"
    return None


class BrokerProcess:
    """A broker process on 127.0.0.1 (a context manager: started on entry, stopped on exit)."""

    name = "broker"

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix=f"wschannel-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.directory / f"{self.name}.log"

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        """Start it (again, on the same port and directory); return once it answers."""
        assert self.process is None, "running already"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer within {START_TIMEOUT} s")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        """Stop it (SIGKILL with ``kill``: no chance to save or say goodbye)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, *, kill: bool = True) -> None:
        self.stop(kill=kill)
        self.start()

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=1)
        except OSError:
            return None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisServer(BrokerProcess):
    """``redis-server`` on a free port; ``persistent``: an append-only file (fsync always)
    in its directory, so a restart keeps the data; otherwise a restart loses it."""

    name = "redis"

    def __init__(self, *, persistent: bool = False) -> None:
        super().__init__()
        self.persistent = persistent

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        path = program("redis-server")
        assert path is not None
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        return [
            path,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            *aof,
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip

    def answers(self) -> bool:
        sock = self._connect()
        if sock is None:
            return False
        with sock, contextlib.suppress(OSError):
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        return False


class NatsServer(BrokerProcess):
    """``nats-server`` (core NATS, no JetStream) on a free port."""

    name = "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        path = program("nats-server")
        assert path is not None
        return [path, "-a", "127.0.0.1", "-p", str(self.port)]

    def answers(self) -> bool:
        sock = self._connect()
        if sock is None:
            return False
        with sock, contextlib.suppress(OSError):
            return sock.recv(5) == b"INFO "
        return False
