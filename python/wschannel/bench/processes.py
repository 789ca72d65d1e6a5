"""The runner's handles on its worker processes (servers, clients, load generators)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

#: Environment variables that would route a client through a proxy.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def child_environment(path: Path | None = None) -> dict[str, str]:
    """This environment without proxy variables, with ``path`` first on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(path), env.get("PYTHONPATH"))))
    return env


def command(module: str, *args: str, pinned: bool = False) -> list[str]:
    """``python -m MODULE ARGS`` with this interpreter; a bare name is a module of this
    package (``worker`` is ``wschannel.bench.worker``). Pinned to CPU 0 with ``taskset`` if
    asked."""
    prefix = ["taskset", "-c", "0"] if pinned else []
    if "." not in module:
        module = f"{__package__}.{module}"
    return [*prefix, sys.executable, "-m", module, *args]


class WorkerError(RuntimeError):
    """A worker answered with an error, died, or did not answer in time."""


class Worker:
    """A child process that answers JSON lines; its stderr is kept for error messages."""

    def __init__(self, argv: list[str], path: Path | None = None) -> None:
        """Start ``argv``; ``path``: a directory its modules are imported from (the
        repository's root for ``benchmarks.capacity``), run from there."""
        self.argv = argv
        self.path = path
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=path,
            env=child_environment(path),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._pump(self.process.stdout, self.lines.put)
        self._pump(self.process.stderr, self.errors.append)

    @staticmethod
    def _pump(stream: IO[str], sink: Any) -> None:
        def pump() -> None:
            for line in stream:
                sink(line)
            sink(None)

        threading.Thread(target=pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(f"no answer in {timeout:.0f} s from {self.name}") from None
        if line is None:
            stderr = "".join(e for e in self.errors if e)[-2000:]
            raise WorkerError(f"{self.name} exited ({self.process.poll()}): {stderr}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"{self.name}: {answer['error']}")
        return answer

    @property
    def name(self) -> str:
        argv = self.argv
        if "-m" in argv:  # python -m MODULE ARGS
            return " ".join(argv[argv.index("-m") + 1 :])
        return " ".join([Path(argv[0]).name, *argv[1:]])  # a native program

    def close(self, timeout: float = 10.0) -> None:
        """Close its stdin (the signal to finish) and wait; kill it if it does not."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (``VmRSS`` in ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise WorkerError(f"no VmRSS for {pid}")
