"""The ``native`` section: servers measured by a native load generator, beside native servers.

The Python load generators cap what a fast server can show, so this section drives every
server with ``loadgen``, a Rust program on tokio-tungstenite (``benchmarks/native`` in the
repository), and puts two native servers beside ``wschannel``'s and picows's: echo and
broadcast servers on ``tokio-tungstenite`` and ``fastwebsockets`` (``anchor-server``). All of
them run on one thread, like the Python servers; the load generator has the other core.

Cells, interleaved per repetition in a shuffled order: echo on 100 and 1,000 connections
(one small message in flight on each), a broadcast to 1,000 connections, and one connection
with 256 B messages, 64 in flight and one at a time, plain and over TLS.

What a server costs: the load generator (one core) can be what caps every server's rate, so
the section also takes each server process's CPU time (user + system, all its threads: the
process's CPU-time clock) at its window's start and end, as ``loadgen`` reads its count
(``--server-pid``; it announces both edges with the CPU times in JSON lines). A record
has the server's busy fraction of one core over the window (``server_busy``; the load
generator's own as ``loadgen_busy``) and its ``capacity``: the rate per server CPU-second
(``rate / server_busy``), the figure that compares servers when none of them is busy all the
time.

The native programs are built with cargo from the repository the first time (cached under
``~/.cache/wschannel/native-target``); an installed package without the repository, or a
machine without cargo, skips the section with a line saying so. ``WSCHANNEL_NATIVE_BIN``
names a directory that already holds both programs.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .processes import Worker, WorkerError

# The runner's settings, progress line and recorder (wschannel.bench.run, which imports this
# module: typed loosely here so that the import goes one way).
Settings = Any
Progress = Any
Recorder = Any
#: ``run.start_server(impl, settings, tls=..., broadcast=...)``: a Python server worker.
StartPython = Callable[..., tuple[Worker, str, int]]

__all__ = ["NATIVE_SERVERS", "binaries", "count", "cpu_seconds", "run_native"]

#: The native servers (``anchor-server --impl NAME``).
NATIVE_SERVERS = ("tokio-tungstenite", "fastwebsockets")
#: The Python servers measured beside them.
PYTHON_SERVERS = ("wschannel", "picows")

PACKAGE = Path("benchmarks") / "native"
CACHE = Path.home() / ".cache" / "wschannel" / "native-target"


@dataclass(frozen=True)
class Cell:
    name: str
    mode: str  # loadgen's mode: echo or broadcast
    connections: int
    size: int
    inflight: int
    tls: bool


def cells(settings: Settings) -> list[Cell]:
    """The section's cells; the TLS ones only where trustme can make the certificates."""
    many = settings.load_connections or (100, 1000)
    listed = [Cell(f"load {n}", "echo", n, 41, 1, False) for n in many]
    listed.append(Cell(f"broadcast {settings.broadcast_connections}", "broadcast",
                       settings.broadcast_connections, 41, 1, False))  # fmt: skip
    for tls in (False, True) if importlib.util.find_spec("trustme") else (False,):
        scheme = "tls" if tls else "plain"
        listed.append(Cell(f"{scheme} pipelined 256 B", "echo", 1, 256, 64, tls))
        listed.append(Cell(f"{scheme} request/response 256 B", "echo", 1, 256, 1, tls))
    return listed


def repository() -> Path | None:
    """The repository this package runs from (an editable install), if it is one."""
    for parent in Path(__file__).resolve().parents:
        if (parent / PACKAGE / "Cargo.toml").is_file():
            return parent
    return None


def binaries() -> tuple[Path | None, str | None]:
    """The directory holding ``anchor-server`` and ``loadgen`` (built if needed), or
    ``None`` and why not."""
    given = os.environ.get("WSCHANNEL_NATIVE_BIN")
    if given:
        folder = Path(given)
        if all((folder / name).is_file() for name in ("anchor-server", "loadgen")):
            return folder, None
        return None, f"WSCHANNEL_NATIVE_BIN={given} lacks anchor-server or loadgen"
    root = repository()
    if root is None:
        return None, "the native programs come with the repository (benchmarks/native)"
    if shutil.which("cargo") is None:
        return None, "cargo is not on PATH, to build benchmarks/native"
    CACHE.mkdir(parents=True, exist_ok=True)
    built = subprocess.run(
        ["cargo", "build", "--release", "--quiet"],
        cwd=root / PACKAGE,
        env={**os.environ, "CARGO_TARGET_DIR": str(CACHE)},
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        return None, f"building benchmarks/native failed: {built.stderr.strip()[-500:]}"
    return CACHE / "release", None


#: Clock ticks per second, the unit of ``/proc/PID/stat``'s CPU times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: Whether processes' CPU times can be read (Linux); elsewhere records have no CPU fields.
CPU_TIMES = sys.platform == "linux"


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far, user + system, all its threads (those that ended
    too), in seconds.

    Linux keeps a CPU-time clock for every process, which ``clock_gettime`` reads with the
    clock id made from the pid (``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)`` in the
    kernel's ``posix-timers.h``), to the nanosecond; where that fails, ``/proc/PID/stat``
    (in clock ticks, usually 10 ms: coarse for a 0.4 s window)."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError as error:
        raise WorkerError(f"no CPU time for process {pid}: {error}") from None
    # Fields after the command name (which may hold spaces and parentheses): state is the
    # 3rd field of the line, utime the 14th and stime the 15th.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def count(settings: Settings) -> int:
    """Measurements the section makes (for the progress bar)."""
    servers = len(NATIVE_SERVERS) + len(PYTHON_SERVERS)
    reps: int = settings.reps
    return len(cells(settings)) * servers * reps


def start_server(
    name: str,
    folder: Path,
    settings: Settings,
    start_python: StartPython,
    *,
    tls: bool,
    broadcast: bool,
) -> tuple[Worker, str, int]:
    """A server worker, its URL and the pid of the process serving; the Python ones through
    ``start_python``."""
    if name in PYTHON_SERVERS:
        return start_python(name, settings, tls=tls, broadcast=broadcast)
    argv = [str(folder / "anchor-server"), "--impl", name, "--port", "0"]
    if tls:
        pem = str(Path(settings.tls_dir) / "server.pem")  # the key and the certificate
        argv += ["--cert", pem, "--key", pem]
    if broadcast:
        argv.append("--broadcast")
    worker = Worker(argv)
    answer = worker.receive(timeout=30)
    return worker, f"{'wss' if tls else 'ws'}://127.0.0.1:{answer['port']}/", int(answer["pid"])


def measure(
    folder: Path, url: str, cell: Cell, settings: Settings, server_pid: int
) -> dict[str, Any]:
    """``loadgen``'s final line, with ``window``: the seconds and the CPU seconds of the
    server (``server_pid``) and of the load generator over its window.

    ``loadgen`` reads both CPU times itself as it reads its count at the window's start and
    end, so they cover exactly the window counted; where its lines lack them (a clock it
    could not read), the runner reads them as each line arrives, on its own clock (the
    reading delay is about the same at both ends). No ``window`` where neither can."""
    argv = [str(folder / "loadgen"), cell.mode, url]
    argv += ["--connections", str(cell.connections), "--size", str(cell.size)]
    argv += ["--inflight", str(cell.inflight), "--server-pid", str(server_pid)]
    argv += ["--warmup", str(max(settings.warmup, 0.5)), "--duration", str(settings.duration)]
    if cell.tls:
        argv += ["--ca", str(Path(settings.tls_dir) / "ca.pem")]
    worker = Worker(argv)
    edges: dict[str, dict[str, Any]] = {}
    try:
        for _ in range(3):  # start, end, the result
            answer = worker.receive(timeout=120)
            edge = answer.get("window")
            if edge is None:
                break
            if edge not in ("start", "end") or edge in edges:
                raise WorkerError(f"{worker.name}: unexpected line {answer}")
            if CPU_TIMES:  # the same order at both edges
                answer["runner"] = (
                    time.monotonic(),
                    cpu_seconds(server_pid),
                    cpu_seconds(worker.pid),
                )
            edges[edge] = answer
        else:
            raise WorkerError(f"{worker.name}: no result after its window")
    finally:
        worker.close()
    if "count" not in answer:
        raise WorkerError(f"{worker.name}: no count in {answer}")
    if edges.keys() != {"start", "end"}:
        return answer
    start, end = edges["start"], edges["end"]
    if all("server_cpu_s" in e and "loadgen_cpu_s" in e for e in (start, end)):
        answer["window"] = {
            "seconds": answer["seconds"],
            "server_cpu_s": end["server_cpu_s"] - start["server_cpu_s"],
            "loadgen_cpu_s": end["loadgen_cpu_s"] - start["loadgen_cpu_s"],
            "read_by": "loadgen",
        }
    elif "runner" in start:
        (t0, server0, loadgen0), (t1, server1, loadgen1) = start["runner"], end["runner"]
        answer["window"] = {
            "seconds": t1 - t0,
            "server_cpu_s": server1 - server0,
            "loadgen_cpu_s": loadgen1 - loadgen0,
            "read_by": "runner",
        }
    return answer


def cpu_figures(rate: float, window: dict[str, Any]) -> dict[str, Any]:
    """A record's CPU fields from ``measure``'s window: the server's and the load generator's
    busy fraction of one core, and the server's capacity, ``rate`` per server CPU-second
    (absent when the window or the server's CPU time rounds to nothing)."""
    seconds = window["seconds"]
    if seconds <= 0:
        return {}
    figures = {
        "window_s": seconds,
        "server_cpu_s": window["server_cpu_s"],
        "server_busy": window["server_cpu_s"] / seconds,
        "loadgen_busy": window["loadgen_cpu_s"] / seconds,
        "cpu_read_by": window.get("read_by", "runner"),
    }
    if window["server_cpu_s"] > 0:
        figures["capacity"] = rate / figures["server_busy"]
    return figures


def run_native(
    settings: Settings,
    progress: Progress,
    recorder: Recorder,
    folder: Path,
    start_python: StartPython,
) -> None:
    """Every cell against every server, servers started once per kind of cell."""
    servers = [*PYTHON_SERVERS, *NATIVE_SERVERS]
    kinds = {(cell.tls, cell.mode == "broadcast") for cell in cells(settings)}
    started: dict[tuple[str, bool, bool], tuple[Worker, str, int]] = {}
    try:
        for name in servers:
            for tls, broadcast in sorted(kinds):
                try:
                    started[name, tls, broadcast] = start_server(
                        name, folder, settings, start_python, tls=tls, broadcast=broadcast
                    )
                except WorkerError as error:
                    progress.note(f"error: native: {name} server did not start: {error}"[:400])
        for rep in range(settings.reps):
            for cell in cells(settings):
                order = list(servers)
                random.Random(f"native{rep}{cell.name}").shuffle(order)
                for name in order:
                    what = f"native {cell.name} {name}"
                    record: dict[str, Any] = {
                        "section": "native",
                        "impl": name,
                        "cell": cell.name,
                        "connections": cell.connections,
                        "size": cell.size,
                        "inflight": cell.inflight,
                        "tls": cell.tls,
                        "rep": rep,
                    }
                    server = started.get((name, cell.tls, cell.mode == "broadcast"))
                    if server is None:
                        progress.step(what, "no server")
                        continue
                    try:
                        answer = measure(folder, server[1], cell, settings, server[2])
                    except WorkerError as error:
                        record["error"] = str(error)[-1500:]
                        progress.note(f"error: {what}: {str(error)[-300:]}")
                        progress.step(what, "error")
                    else:
                        rate = answer["count"] / answer["seconds"]
                        record["msgs_per_s"] = rate
                        record["rate"] = rate  # what the table shows: deliveries for a broadcast
                        if cell.mode == "broadcast":
                            record["deliveries_per_s"] = record["rate"] = rate * cell.connections
                        shown = f"{rate:,.0f}/s"
                        if "window" in answer:
                            record.update(cpu_figures(record["rate"], answer["window"]))
                        if "server_busy" in record:
                            shown += f", server busy {record['server_busy']:.0%}"
                        progress.step(what, shown)
                    recorder.write(record)
    finally:
        for worker, _, _ in started.values():
            worker.close()
