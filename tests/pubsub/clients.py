"""Node processes (tests/pubsub/node.py) and the clients that talk to them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from conftest import TIMEOUT, wait_until

import wschannel
from wschannel.io import IOWebSocketChannel

NODE = Path(__file__).with_name("node.py")
ROOT = Path(__file__).parents[2]
# Where this process imported wschannel from: the source tree's python/, or site-packages
# when the suite runs against an installed wheel (.ci/wheels.sh), where python/ has no engine.
PACKAGE_ROOT = Path(wschannel.__file__).resolve().parents[1]

OWN_SESSION = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
"""Whether a node runs in a session of its own, with the workers it spawns: on free-threaded
CPython 3.13, where every class creation spins on a lock with 40 ``sched_yield()`` calls
(see ``python_with_sigint`` in .ci/wheels.sh), and each yield waits behind every runnable
process of the session's scheduling group (autogroup). Beside an xdist worker running a
busy test, a node and its two spawned workers took over 30 s to import: ``serve_workers``
gave up on them (a 3.13t CI run). Alone in a group, the importing processes yield only to
each other."""


class Node:
    """A node process: ``node.py`` (or ``script``) with its arguments; it prints "listening
    PORT" (or a ws://127.0.0.1:PORT URL) once it serves."""

    def __init__(self, *args: str, script: Path = NODE) -> None:
        self.args = [sys.executable, str(script), *args]
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def launch(self) -> None:
        """Start the process (:meth:`ready` waits until it listens)."""
        env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
        self.process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=OWN_SESSION,
        )
        sessions = os.environ.get("WHEELS_SESSIONS")
        if OWN_SESSION and sessions:  # .ci/wheels.sh kills what is left of it at the end
            with open(sessions, "a") as file:
                file.write(f"{self.process.pid}\n")

    def ready(self) -> Node:
        """Wait (blocking, at most 6 times TIMEOUT: a loaded machine starts Python slowly) for
        the node's "listening PORT" line."""
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 6 * TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        found = re.search(r"(?:^listening |ws://127\.0\.0\.1:)(\d+)", line)
        if found is None:
            self.kill()
            raise RuntimeError(f"node did not start: {line!r}, exit {self.process.returncode}")
        self.port = int(found.group(1))
        return self

    @staticmethod
    def start_all(nodes: list[Node]) -> list[Node]:
        for node in nodes:
            node.launch()
        return [node.ready() for node in nodes]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: the node dies without closing anything (in its own session, its
        workers with it)."""
        assert self.process is not None
        if OWN_SESSION:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(2 * TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()


class Client:
    """A WebSocket client of a node: its replies apart from the topics' messages."""

    def __init__(self, url: str) -> None:
        self.channel = IOWebSocketChannel.connect(url)
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.messages: list[str] = []
        self.closed = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.channel.stream:
            assert isinstance(message, str)
            if message.startswith("{") and '"reply"' in message:
                self.replies.put_nowait(json.loads(message))
            else:
                self.messages.append(message)
        self.closed.set_result(self.channel.close_code)

    async def ask(self, **command: Any) -> dict[str, Any]:
        self.channel.sink.add(json.dumps(command))
        return await asyncio.wait_for(self.replies.get(), TIMEOUT)

    async def join(self, topic: str, since: list[Any] | None = None) -> dict[str, Any]:
        reply = await self.ask(join=topic, since=since)
        assert reply["reply"] == "joined", reply
        return reply

    async def publish(self, topic: str, data: str) -> dict[str, Any]:
        return await self.ask(publish=topic, data=data)

    def frames(self) -> list[dict[str, Any]]:
        """The recoverable topics' messages, decoded."""
        return [json.loads(message) for message in self.messages if message.startswith("{")]

    async def wait_for(self, count: int, *, what: str = "") -> None:
        try:
            await wait_until(lambda: len(self.messages) >= count, what=f"{count} messages arrived")
        except AssertionError as exc:  # what the client has at the deadline, not before
            raise AssertionError(f"{exc} {what}; {self.state()}") from None

    def state(self) -> str:
        """For a failing assertion: what arrived, and where the connection is."""
        reader = self._reader
        ended = "reading"
        if reader.done():
            ended = "cancelled" if reader.cancelled() else f"ended: {reader.exception()!r}"
        return (
            f"messages {self.messages!r}, replies waiting {self.replies.qsize()}, "
            f"close code {self.channel.close_code}, reader {ended}"
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.channel.sink.close(), TIMEOUT)
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
