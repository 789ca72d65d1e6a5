"""Network namespaces for the fault tests (``tests/test_faults.py``), and the programs those
tests run inside them.

Imported by the tests: :func:`unavailable` (why namespaces cannot be used here, or
``None``), :class:`Namespace` (``ip netns add``/``del``, commands inside it), :func:`inside`
(run the calling thread in a namespace, so that the sockets it creates live there) and
:class:`Child` (a helper subprocess that reports JSON lines on its stdout).

Run as a program (``ip netns exec NS python tests/netns.py ...``), it is one of:

- ``serve``: an echo server, asyncio (``wschannel.serve``, waiting on ``sink.flush()``
  after each echo, so that no backlog builds up) or blocking (``wschannel.sync.serve``),
  that prints ``listening`` with its port, ``open`` when a connection opens and ``closed``
  (close code, messages echoed, monotonic time) when a connection's stream ends;
- ``wire``: a user-space stand-in for ``tc qdisc ... netem delay D loss L`` where netem is
  not built into the kernel: a TUN device in each of two namespaces, and this process
  forwarding the IP packets between them, each delayed ``D`` seconds and dropped with
  probability ``L``, in order, with netem's default queue limit of 1000 packets.

Both exit when their stdin closes, so a test that dies leaves no process behind.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import queue
import random
import re
import selectors
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
PREFIX = "wsf"
"""Names of the namespaces the tests make: ``wsf<pid>x<n><suffix>``."""
HELPER = os.path.abspath(__file__)
COMMAND_TIMEOUT = 10.0
"""Seconds an ``ip`` command may take."""

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace open as ``fd``."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def ip(*args: str) -> None:
    """Run ``ip ARGS``; ``RuntimeError`` with its stderr if it fails."""
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def unavailable() -> str | None:
    """Why the fault tests cannot run here, or ``None`` if they can (root, Linux, ``ip``)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces (ip netns add) needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if not os.path.exists("/proc/thread-self/ns/net"):
        return "no /proc/thread-self/ns/net"
    if ctypes.util.find_library("c") is None:
        return "no libc for setns()"
    return None


def tcp_counters(namespace: Namespace) -> dict[str, int]:
    """The TCP counters of ``/proc/net/snmp`` in a namespace (``OutSegs``,
    ``RetransSegs``...)."""
    result = subprocess.run(
        namespace.exec_argv("cat", "/proc/net/snmp"),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=True,
    )
    lines = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("Tcp:")]
    names, values = lines  # a line of names, then one of values
    return dict(zip(names, map(int, values), strict=True))


def remove_stale() -> None:
    """Delete the namespaces of test processes that died before cleaning up."""
    with contextlib.suppress(OSError):
        for name in os.listdir(NETNS_DIR):
            match = re.fullmatch(PREFIX + r"(\d+)x\d+\w*", name)
            if match is None:
                continue
            try:
                os.kill(int(match[1]), 0)
            except ProcessLookupError:
                with contextlib.suppress(RuntimeError):
                    ip("netns", "del", name)
            except PermissionError:
                pass


_counter = iter(range(1 << 30))


class Namespace:
    """A network namespace of this process (``ip netns add``), with its loopback up;
    :meth:`delete` removes it (and the interfaces in it)."""

    def __init__(self, suffix: str) -> None:
        self.name = f"{PREFIX}{os.getpid()}x{next(_counter)}{suffix}"
        ip("netns", "add", self.name)
        self.deleted = False
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    def ip(self, *args: str) -> None:
        """``ip -n NAME ARGS``."""
        ip("-n", self.name, *args)

    def cap_tcp_buffers(self, most: int) -> None:
        """Make ``most`` bytes the largest that the kernel grows a TCP socket's receive or
        send buffer to in this namespace (``net.ipv4.tcp_rmem``/``tcp_wmem`` are per
        namespace; the host's stay as they are)."""
        ip(
            "netns", "exec", self.name, "sysctl", "-q", "-w",
            f"net.ipv4.tcp_rmem=4096 65536 {most}", f"net.ipv4.tcp_wmem=4096 16384 {most}",
        )  # fmt: skip

    def exec_argv(self, *argv: str) -> list[str]:
        """The command line that runs ``argv`` inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    @property
    def path(self) -> str:
        return os.path.join(NETNS_DIR, self.name)

    def delete(self) -> None:
        if not self.deleted:
            self.deleted = True
            ip("netns", "del", self.name)


@contextlib.contextmanager
def inside(path: str) -> Iterator[None]:
    """Run the calling thread in the network namespace at ``path`` (``/run/netns/NAME``),
    then put it back where it was. Sockets keep the namespace they were created in."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        there = os.open(path, os.O_RDONLY)
        try:
            _setns(there)
        finally:
            os.close(there)
        try:
            yield
        finally:
            _setns(here)
    finally:
        os.close(here)


class Child:
    """A helper subprocess (this file run as a program) reporting JSON lines on stdout.

    :meth:`expect` waits for the next report of a given kind; :meth:`stop` closes its stdin
    (it exits) and waits; its stderr is kept for failure messages.
    """

    def __init__(self, argv: Sequence[str]) -> None:
        self.process = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._reports: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._errors = bytearray()
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_errors, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        for line in stdout:
            self._reports.put(json.loads(line))
        self._reports.put(None)

    def _read_errors(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        for line in stderr:
            self._errors += line

    def stderr(self) -> str:
        return self._errors.decode(errors="replace")

    def next(self, timeout: float) -> dict[str, Any]:
        """The next report, within ``timeout`` seconds; ``AssertionError`` if the process
        ends or time runs out."""
        try:
            report = self._reports.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no report within {timeout} s; stderr: {self.stderr()}") from None
        if report is None:
            self._reports.put(None)
            raise AssertionError(f"the helper ended; stderr: {self.stderr()}")
        return report

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next report whose ``event`` is ``event`` (others are skipped), within
        ``timeout`` seconds; ``AssertionError`` if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.next(max(0.0, deadline - time.monotonic()))
            if report["event"] == event:
                return report

    def stop(self, timeout: float) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)


# The programs.


_report_lock = threading.Lock()


def report(**fields: object) -> None:
    """One JSON line on stdout (from any thread)."""
    line = json.dumps(fields) + "\n"
    with _report_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def exit_when_stdin_closes() -> None:
    """The test that started this process is gone (or done with it): exit at once."""

    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def serve(arguments: argparse.Namespace) -> None:
    options: dict[str, Any] = {"ping_interval": arguments.ping_interval}
    if arguments.close_timeout is not None:  # else the default (10 s)
        options["close_timeout"] = arguments.close_timeout
    exit_when_stdin_closes()
    if arguments.flavour == "sync":
        serve_blocking(arguments.host, options)
    else:
        import asyncio

        asyncio.run(serve_asyncio(arguments.host, options))


def serve_blocking(host: str, options: dict[str, Any]) -> None:
    import wschannel.sync

    ids = iter(range(1 << 30))

    def echo(channel: wschannel.sync.SyncWebSocketChannel) -> None:
        number = next(ids)
        report(event="open", id=number, at=time.monotonic())
        count = 0
        for message in channel.stream:
            channel.sink.add(message)
            count += 1
        report(
            event="closed", id=number, code=channel.close_code, messages=count, at=time.monotonic()
        )

    server = wschannel.sync.serve(echo, host, 0, **options)
    report(event="listening", port=server.port)
    server.serve_forever()


async def serve_asyncio(host: str, options: dict[str, Any]) -> None:
    import asyncio

    import wschannel
    from wschannel.io import IOWebSocketChannel

    ids = iter(range(1 << 30))

    async def echo(channel: IOWebSocketChannel) -> None:
        number = next(ids)
        report(event="open", id=number, at=time.monotonic())
        count = 0
        async for message in channel.stream:
            channel.sink.add(message)
            count += 1
            with contextlib.suppress(Exception):  # gone: the stream ends next
                await channel.sink.flush()  # backpressure: no backlog of echoes
        report(
            event="closed", id=number, code=channel.close_code, messages=count, at=time.monotonic()
        )

    async with wschannel.serve(echo, host, 0, **options) as server:
        report(event="listening", port=server.port)
        await asyncio.Future()  # until the process is stopped


# The wire: two TUN devices and the packets between them.

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
NETEM_LIMIT = 1000
"""netem's default queue length, in packets: more waiting packets are dropped."""


def open_tun(namespace_path: str, name: str) -> int:
    """Create the TUN device ``name`` in a namespace; its file descriptor (non-blocking)."""
    with inside(namespace_path):  # a TUN device is made in its opener's namespace
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class Direction:
    """Packets read from one TUN device, on their way to the other one."""

    def __init__(self, source: int, target: int) -> None:
        self.source = source
        self.target = target
        self.queue: deque[tuple[float, bytes]] = deque()
        self.forwarded = 0
        self.lost = 0
        self.overflowed = 0
        self.largest = 0


def wire(arguments: argparse.Namespace) -> None:
    tun = arguments.tun
    try:
        first = open_tun(arguments.namespaces[0], tun)
        second = open_tun(arguments.namespaces[1], tun)
    except OSError as exc:
        report(event="unavailable", reason=f"cannot make a TUN device: {exc}")
        return
    delay: float = arguments.delay
    loss: float = arguments.loss
    rng = random.Random(arguments.seed)
    directions = {first: Direction(first, second), second: Direction(second, first)}
    selector = selectors.DefaultSelector()
    for fd in directions:
        selector.register(fd, selectors.EVENT_READ)
    stdin = sys.stdin.fileno()
    selector.register(stdin, selectors.EVENT_READ)
    report(event="ready")
    running = True
    while running:
        due = [direction.queue[0][0] for direction in directions.values() if direction.queue]
        timeout = max(0.0, min(due) - time.monotonic()) if due else None
        for key, _ in selector.select(timeout):
            fd = key.fd
            if fd == stdin:
                running = False  # EOF (or anything) on stdin: report and stop
                continue
            direction = directions[fd]
            for _ in range(256):  # what is waiting, within bounds
                try:
                    packet = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                direction.largest = max(direction.largest, len(packet))
                if rng.random() < loss:
                    direction.lost += 1
                elif len(direction.queue) >= NETEM_LIMIT:
                    direction.overflowed += 1
                else:
                    direction.queue.append((time.monotonic() + delay, packet))
        now = time.monotonic()
        for direction in directions.values():
            waiting = direction.queue
            while waiting and waiting[0][0] <= now:
                packet = waiting.popleft()[1]
                with contextlib.suppress(OSError):  # the device may be down
                    os.write(direction.target, packet)
                direction.forwarded += 1
    report(
        event="stats",
        directions=[
            {
                "forwarded": direction.forwarded,
                "lost": direction.lost,
                "overflowed": direction.overflowed,
                "largest": direction.largest,
            }
            for direction in directions.values()
        ],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve", help="an echo server that reports its connections")
    server.add_argument("--flavour", choices=["asyncio", "sync"], default="asyncio")
    server.add_argument("--host", required=True)
    server.add_argument("--ping-interval", type=float, default=None)
    server.add_argument("--close-timeout", type=float, default=None)
    link = commands.add_parser("wire", help="netem in user space, between two TUN devices")
    link.add_argument("namespaces", nargs=2, help="the namespaces' paths (/run/netns/NAME)")
    link.add_argument("--tun", default="wf0", help="the TUN devices' name, in both namespaces")
    link.add_argument("--delay", type=float, default=0.0, help="seconds, each way")
    link.add_argument("--loss", type=float, default=0.0, help="probability, each way")
    link.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    if arguments.command == "serve":
        serve(arguments)
    else:
        wire(arguments)


if __name__ == "__main__":
    main()
