"""``wschannel.html`` under Pyodide in Node 20+, whose ``--experimental-websocket`` global
``WebSocket`` has the browser's interface.

One Node process for the module (``node/run.mjs``): it loads Pyodide from
``node/node_modules``, writes the pure-Python ``wschannel`` files into Pyodide's filesystem
and imports ``suite.py``; each test sends it one check to run, over stdin, and asserts the
outcome it prints. The process is ended when the module ends.

``tests/browser/setup.sh`` installs Pyodide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any, Final

import pytest
import pytest_asyncio

from .harness import (
    BOOT_TIMEOUT,
    CHECK_NAMES,
    HERE,
    TIMEOUT,
    Peers,
    pyodide_installed,
    python_files,
    within,
)

NODE = shutil.which("node")
FLAG: Final = "--experimental-websocket"
PREFIX: Final = b"@@wschannel "


def node_has_websocket() -> bool:
    """Whether this Node has a global ``WebSocket`` with :data:`FLAG` (Node 20.10 and later)."""
    if NODE is None:
        return False
    try:
        probe = subprocess.run(
            [NODE, FLAG, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


pytestmark = [
    pytest.mark.skipif(
        not node_has_websocket(), reason=f"Node 20.10+ with {FLAG} is needed (node is {NODE})"
    ),
    pytest.mark.skipif(
        not pyodide_installed(), reason="Pyodide is missing: run tests/browser/setup.sh"
    ),
    pytest.mark.asyncio(loop_scope="module"),
]


class NodeRunner:
    """``node run.mjs``: one request line in, one answer line out."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr = bytearray()
        assert process.stderr is not None
        self._stderr_task = asyncio.get_running_loop().create_task(self._collect(process.stderr))

    @classmethod
    async def start(cls) -> NodeRunner:
        assert NODE is not None
        process = await asyncio.create_subprocess_exec(
            NODE,
            FLAG,
            "--no-warnings",
            str(HERE / "node" / "run.mjs"),
            cwd=HERE / "node",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.stderr += chunk

    async def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request; its answer, within ``timeout`` seconds."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(message).encode() + b"\n")
        await within(stdin.drain())

        async def answer() -> dict[str, Any]:
            while line := await stdout.readline():
                if line.startswith(PREFIX):
                    parsed: dict[str, Any] = json.loads(line[len(PREFIX) :])
                    return parsed
            raise AssertionError(f"node exited; stderr:\n{self.stderr.decode(errors='replace')}")

        return await within(answer(), timeout)

    async def stop(self) -> None:
        """Close stdin (the runner exits), kill it if it lingers."""
        process = self.process
        if process.stdin is not None:
            process.stdin.close()
        try:
            await within(process.wait(), TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
        self._stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_task


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def peers() -> AsyncIterator[Peers]:
    peers = Peers()
    await peers.start()
    try:
        yield peers
    finally:
        await peers.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node() -> AsyncIterator[NodeRunner]:
    """The runner, with Pyodide loaded and the suite imported."""
    runner = await NodeRunner.start()
    try:
        files = {target: str(source) for target, source in python_files().items()}
        ready = await runner.request({"files": files}, BOOT_TIMEOUT)
        assert "ready" in ready, ready
        yield runner
    finally:
        await runner.stop()


@pytest.mark.parametrize("name", CHECK_NAMES)
async def test_check_passes_under_pyodide_in_node(
    node: NodeRunner, peers: Peers, name: str
) -> None:
    result = await node.request({"name": name, "config": peers.config()}, 4 * TIMEOUT)
    assert result["ok"], result.get("error", result)
