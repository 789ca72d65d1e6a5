"""A small Chrome DevTools Protocol driver: start headless Chromium, open a page, evaluate.

Chromium listens on a port it picks (``--remote-debugging-port=0``) and writes it, with the
browser's WebSocket path, to ``DevToolsActivePort`` in its user-data directory. The driver
speaks the protocol (JSON commands with ids, answers and events) over that WebSocket with the
``websockets`` client. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    """The path of Debian's ``chromium`` (or another Chromium on ``PATH``), if any."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            return path
    return None


class DevToolsError(Exception):
    """Chromium answered a command with an error, or could not be started."""


class Chromium:
    """A headless Chromium process with its own temporary profile."""

    def __init__(self, executable: str, timeout: float, flags: tuple[str, ...] = ()) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="wschannel-chromium-"))
        self.process = subprocess.Popen(
            [executable, *FLAGS, *flags, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.endpoint = self._read_endpoint(timeout)
        except BaseException:
            self.stop()
            raise

    def _read_endpoint(self, timeout: float) -> str:
        """The browser's DevTools WebSocket URL, from ``DevToolsActivePort``."""
        path = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DevToolsError(f"Chromium exited with {self.process.returncode}")
            lines = path.read_text().split("\n") if path.exists() else []
            if len(lines) >= 2 and lines[0] and lines[1]:
                return f"ws://127.0.0.1:{int(lines[0])}{lines[1]}"
            time.sleep(0.05)
        raise DevToolsError(f"Chromium did not write {path} within {timeout} s")

    def stop(self) -> None:
        """Terminate Chromium (kill it if it lingers) and remove its profile."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class DevTools:
    """A connection to the browser's DevTools endpoint (flat sessions for pages)."""

    def __init__(self, ws: ClientConnection, timeout: float) -> None:
        self.ws = ws
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, endpoint: str, timeout: float) -> AsyncIterator[DevTools]:
        async with connect(endpoint, max_size=None, open_timeout=timeout) as ws:
            devtools = cls(ws, timeout)
            try:
                yield devtools
            finally:
                devtools._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await devtools._reader

    async def _read(self) -> None:
        async for raw in self.ws:
            message: dict[str, Any] = json.loads(raw)
            answer = self._answers.pop(message.get("id", -1), None)
            if answer is not None:
                if not answer.done():
                    answer.set_result(message)
            elif "method" in message:
                self._events.put_nowait(message)

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send a command and return its result; :class:`DevToolsError` if it failed.

        The answer must come within ``timeout`` seconds (the driver's timeout by default).
        """
        command_id = next(self._ids)
        command: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session is not None:
            command["sessionId"] = session
        answer = asyncio.get_running_loop().create_future()
        self._answers[command_id] = answer
        await self.ws.send(json.dumps(command))
        message = await asyncio.wait_for(answer, timeout or self.timeout)
        if "error" in message:
            raise DevToolsError(f"{method}: {message['error']}")
        result: dict[str, Any] = message["result"]
        return result

    async def event(self, method: str, session: str | None = None) -> dict[str, Any]:
        """The next event called ``method`` (of ``session``); earlier other events are dropped."""
        async with asyncio.timeout(self.timeout):
            while True:
                event = await self._events.get()
                if event["method"] == method and event.get("sessionId") == session:
                    params: dict[str, Any] = event.get("params", {})
                    return params

    @contextlib.asynccontextmanager
    async def page(self, url: str) -> AsyncIterator[str]:
        """Open ``url`` in a new tab once loaded; yields the tab's session; closes the tab."""
        target = (await self.call("Target.createTarget", {"url": "about:blank"}))["targetId"]
        try:
            attached = await self.call(
                "Target.attachToTarget", {"targetId": target, "flatten": True}
            )
            session: str = attached["sessionId"]
            await self.call("Page.enable", session=session)
            navigated = await self.call("Page.navigate", {"url": url}, session=session)
            if "errorText" in navigated:
                raise DevToolsError(f"navigating to {url}: {navigated['errorText']}")
            await self.event("Page.loadEventFired", session)
            yield session
        finally:
            await self.call("Target.closeTarget", {"targetId": target})

    async def evaluate(self, session: str, expression: str, timeout: float) -> Any:
        """The value of ``expression`` in the page, awaited if it is a promise."""
        params = {"expression": expression, "awaitPromise": True, "returnByValue": True}
        evaluated = await self.call("Runtime.evaluate", params, session, timeout=timeout)
        if "exceptionDetails" in evaluated:
            raise DevToolsError(f"{expression}: {evaluated['exceptionDetails']}")
        return evaluated["result"].get("value")
