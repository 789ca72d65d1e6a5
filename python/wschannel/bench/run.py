"""Run the benchmark suite: ``wschannel bench [--quick] [--out DIR] ...`` (``python -m
benchmarks`` in a checkout: the same, writing into ``benchmarks/results``).

Sections (``--sections``, all by default):

- ``echo``: one connection, client and server in separate processes on loopback,
  request/response (one message in flight) and pipelined (64 in flight), in variants:
  ``plain`` (every size), ``tls``, ``uvloop`` (both processes) and ``pinned`` (both
  processes on CPU 0 with ``taskset``: request/response only).
- ``load``: 100 and 1,000 connections echoing a small message against each server.
- ``broadcast``: one message fanned out to 1,000 clients by each server.
- ``memory``: resident memory per idle connection at 1,000 and 10,000 connections, plain and
  with permessage-deflate.
- ``compression``: echo of a JSON corpus with permessage-deflate on for everyone.
- ``native`` (not in ``--quick``): ``wschannel``'s and picows's servers beside native ones
  (tokio-tungstenite, fastwebsockets) under a native load generator, so that a Python client
  does not cap the figures (:mod:`wschannel.bench.native`; needs the repository and cargo).

Measurements are interleaved: each repetition runs every cell once, with the
implementations in a new order, so a slow moment of a shared machine lands on all of
them. Results go to ``DIR/results.jsonl`` (one JSON object a line), then ``DIR/table.md``
and ``DIR/*.png`` are made from it (``python -m wschannel.bench.report DIR`` remakes them).

Every peer library that is installed takes part; one that is not is skipped with a line
saying so, and so are what needs a missing tool: the TLS variant needs ``trustme``, the
uvloop variant ``uvloop``, the pinned one ``taskset``, the plots ``matplotlib``, and the
load and broadcast sections picows (their load generator is picows's client).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from . import clients, machine, native, report, servers
from .native import run_native
from .payloads import SIZES, TEXT_SIZE, size_label
from .processes import Worker, WorkerError, command, rss_bytes

#: Where results go unless ``--out`` says otherwise (the current directory's).
DEFAULT_OUT = Path("wschannel-bench")
QUICK_OUT = Path("wschannel-bench-quick")
PIPELINE = 64
LOAD_CONNECTIONS = (100, 1000)
QUICK_LOAD_CONNECTIONS = (100,)
BROADCAST_CONNECTIONS = 1000
#: Fewer in a quick run: opening 1,000 connections takes each server seconds.
QUICK_BROADCAST_CONNECTIONS = 250
MEMORY_CONNECTIONS = (1000, 10_000)
#: The first window on 1,000 fresh connections runs slow (allocations, the cyclic GC):
#: the load cells warm up for this long at least.
LOAD_WARMUP = 0.5
#: An implementation that failed in a cell is skipped in that cell's later repetitions, and
#: one that failed in this many cells of a variant for the rest of the variant (each failure
#: costs a timeout).
MAX_FAILURES = 3
MEMORY_SERVERS = ("wschannel", "picows", "websockets", "aiohttp", "raw-tcp")
COMPRESSION_IMPLS = ("wschannel", "wschannel-async-for", "websockets", "aiohttp")


@dataclass(frozen=True)
class Variant:
    """One way to run the echo cells: transport, event loop, CPU pinning, what to run."""

    name: str
    sizes: tuple[int, ...]
    modes: tuple[int, ...]  # messages in flight
    tls: bool = False
    loop: str = "asyncio"
    pinned: bool = False
    text: bool = False  # also the 256 B text cell


FULL_VARIANTS = (
    Variant("plain", SIZES, (1, PIPELINE), text=True),
    Variant("tls", (256, 64 << 10), (1, PIPELINE), tls=True),
    Variant("uvloop", (256, 64 << 10), (1, PIPELINE), loop="uvloop"),
    Variant("pinned", (16, 256, 8 << 10), (1,), pinned=True),
)
#: A quick run leaves out the pinned variant: each variant starts a server and a client
#: process per implementation, and a quick run has no time for a third set.
QUICK_VARIANTS = (
    Variant("plain", (256, 64 << 10), (1, PIPELINE)),
    Variant("tls", (256,), (1, PIPELINE), tls=True),
)


@dataclass
class Settings:
    out: Path
    reps: int
    warmup: float
    duration: float
    variants: tuple[Variant, ...]
    impls: tuple[str, ...]
    sections: tuple[str, ...]
    load_connections: tuple[int, ...]
    broadcast_connections: int
    memory_connections: tuple[int, ...]
    memory_compression: tuple[bool, ...]  # quick: plain only (no 11 s wait for compaction)
    memory_reps: int
    quick: bool
    tls_dir: str = ""
    measurements: int = 0
    started: float = field(default_factory=time.time)


class Progress:
    """One status line on stderr: a bar, where the run is, the last result, the time left.

    On a terminal the line is redrawn in place; otherwise (a log file, a pipe) each step is
    a line of its own."""

    BAR_WIDTH = 20

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.started = time.monotonic()
        self.tty = stream.isatty()
        unicode = (getattr(stream, "encoding", None) or "").lower().replace("-", "") == "utf8"
        self.marks = "\N{FULL BLOCK}\N{LIGHT SHADE}" if unicode else "#."

    def bar(self) -> str:
        filled = self.BAR_WIDTH * self.done // self.total
        return self.marks[0] * filled + self.marks[1] * (self.BAR_WIDTH - filled)

    def step(self, what: str, result: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * max(self.total - self.done, 0)
        line = (
            f"{self.bar()} {self.done:4}/{self.total} {100 * self.done // self.total:3}% "
            f"{what:<52} {result:>16}  elapsed {_clock(elapsed)}  left ~{_clock(left)}"
        )
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02}"


class Recorder:
    """Appends result lines to ``results.jsonl``, each with ``at``: seconds since the start
    (where a run's time goes)."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w")
        self.started = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        record = {**record, "at": round(time.monotonic() - self.started, 2)}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


# -- the echo cells -------------------------------------------------------------------------


def echo_cells(variant: Variant) -> list[tuple[int, bool, int]]:
    """(size, text, in flight) for each cell of a variant."""
    payloads = [(size, False) for size in variant.sizes]
    if variant.text:
        payloads.append((TEXT_SIZE, True))
    return [(size, text, inflight) for inflight in variant.modes for size, text in payloads]


def variant_impls(settings: Settings, variant: Variant) -> list[str]:
    if variant.loop == "uvloop":
        return [i for i in settings.impls if i not in clients.SYNC_CLIENTS]
    return list(settings.impls)


def start_server(
    impl: str,
    settings: Settings,
    *,
    loop: str = "asyncio",
    tls: bool = False,
    pinned: bool = False,
    compression: bool = False,
    broadcast: bool = False,
) -> tuple[Worker, str, int]:
    """Start a server worker; returns it, its URL and its pid."""
    args = ["server", impl, "--loop", loop]
    if tls:
        args += ["--tls", settings.tls_dir]
    if compression:
        args.append("--compression")
    if broadcast:
        args.append("--broadcast")
    worker = Worker(command("worker", *args, pinned=pinned))
    answer = worker.receive(timeout=60)
    scheme = "tcp" if impl == "raw-tcp" else ("wss" if tls else "ws")
    return worker, f"{scheme}://127.0.0.1:{answer['port']}/", int(answer["pid"])


def measure_echo(
    client: Worker, url: str, settings: Settings, request: dict[str, Any]
) -> dict[str, Any]:
    window = settings.warmup + settings.duration
    request = {
        "url": url,
        "warmup": settings.warmup,
        "duration": settings.duration,
        "timeout": 15 + 4 * window,
        **request,
        "tls": settings.tls_dir if request.get("tls") else None,
    }
    client.send(request)
    answer = client.receive(timeout=30 + 4 * window)
    return {"msgs_per_s": answer["count"] / answer["seconds"], "count": answer["count"]}


def server_url(urls: dict[str, str], impl: str) -> str:
    try:
        return urls[clients.CLIENTS[impl]]
    except KeyError:
        raise WorkerError(f"the {clients.CLIENTS[impl]} server did not start") from None


def run_echo_group(
    settings: Settings,
    progress: Progress,
    recorder: Recorder,
    *,
    section: str,
    variant: Variant,
    impls: list[str],
    cells: list[tuple[int, bool, int]],
    compression: bool = False,
    corpus: str | None = None,
) -> None:
    """Start the servers and clients of a group, run its cells interleaved, stop them."""
    started = []
    for name in sorted({clients.CLIENTS[impl] for impl in impls}):
        try:
            server = start_server(
                name,
                settings,
                loop=variant.loop,
                tls=variant.tls,
                pinned=variant.pinned,
                compression=compression,
            )
        except WorkerError as error:
            progress.note(f"error: {name} server did not start: {str(error)[-300:]}")
            continue
        started.append((name, server))
    urls = {name: url for name, (_, url, _) in started}
    workers = {
        impl: Worker(
            command("worker", "client", impl, "--loop", variant.loop, pinned=variant.pinned)
        )
        for impl in impls
    }
    failures: dict[str, int] = dict.fromkeys(impls, 0)  # per implementation
    failed: set[tuple[str, int, bool, int]] = set()  # (implementation, cell)
    try:
        for rep in range(settings.reps):
            for size, text, inflight in cells:
                order = list(impls)
                random.Random(f"{section}{variant.name}{rep}{size}{text}{inflight}").shuffle(order)
                for impl in order:
                    request: dict[str, Any] = {
                        "size": size,
                        "text": text,
                        "inflight": inflight,
                        "compression": compression,
                        "corpus": corpus,
                        "tls": variant.tls,
                    }
                    record: dict[str, Any] = {
                        "section": section,
                        "variant": variant.name,
                        "impl": impl,
                        "server": clients.CLIENTS[impl],
                        "size": size,
                        "text": text,
                        "inflight": inflight,
                        "rep": rep,
                    }
                    label = corpus or ("text " if text else "") + size_label(size)
                    what = f"{section} {variant.name} {inflight:>2} in flight {label:<8} {impl}"
                    if failures[impl] >= MAX_FAILURES or (impl, size, text, inflight) in failed:
                        record["error"] = "skipped: failed before in this cell or variant"
                        progress.step(what, "skipped")
                        recorder.write(record)
                        continue
                    try:
                        result = measure_echo(
                            workers[impl], server_url(urls, impl), settings, request
                        )
                    except WorkerError as error:
                        failures[impl] += 1
                        failed.add((impl, size, text, inflight))
                        record["error"] = str(error)[-1500:]
                        progress.note(f"error: {what}: {str(error)[-300:]}")
                        workers[impl].close(timeout=2)
                        workers[impl] = Worker(workers[impl].argv)
                        progress.step(what, "error")
                    else:
                        record.update(result)
                        if corpus:
                            record["corpus"] = corpus
                        else:
                            record["mb_per_s"] = result["msgs_per_s"] * size / 1e6
                        progress.step(what, f"{result['msgs_per_s']:,.0f} msg/s")
                    recorder.write(record)
    finally:
        for worker in workers.values():
            worker.close()
        for _, (worker, _, _) in started:
            worker.close()


def run_echo(settings: Settings, progress: Progress, recorder: Recorder) -> None:
    for variant in settings.variants:
        run_echo_group(
            settings,
            progress,
            recorder,
            section="echo",
            variant=variant,
            impls=variant_impls(settings, variant),
            cells=echo_cells(variant),
        )


def compression_impls(settings: Settings) -> list[str]:
    return [i for i in COMPRESSION_IMPLS if i in settings.impls]


def run_compression(settings: Settings, progress: Progress, recorder: Recorder) -> None:
    run_echo_group(
        settings,
        progress,
        recorder,
        section="compression",
        variant=Variant("deflate", (0,), (1, PIPELINE)),
        impls=compression_impls(settings),
        cells=[(0, True, 1), (0, True, PIPELINE)],
        compression=True,
        corpus="json",
    )


# -- many connections -----------------------------------------------------------------------


def load_servers(settings: Settings, broadcast: bool) -> list[str]:
    # raw TCP is the ceiling of the echo cells only: it has no broadcast, and its load
    # generator could not be picows's client.
    if not installed("picows"):
        return []
    wanted = {*settings.impls, "picows"}
    return [s for s in servers.SERVERS if s in wanted and s != "raw-tcp" and installed(s)]


def run_many(
    settings: Settings, progress: Progress, recorder: Recorder, *, broadcast: bool
) -> None:
    """The ``load`` section (echo on 100 and 1,000 connections) or ``broadcast``."""
    names = load_servers(settings, broadcast)
    section = "broadcast" if broadcast else "load"
    counts = (settings.broadcast_connections,) if broadcast else settings.load_connections
    started = {}
    for name in list(names):
        try:
            started[name] = start_server(name, settings, broadcast=broadcast)
        except WorkerError as error:
            progress.note(f"error: {name} server did not start: {str(error)[-300:]}")
            names.remove(name)
    try:
        for rep in range(settings.reps):
            for connections in counts:
                order = list(names)
                random.Random(f"{section}{rep}{connections}").shuffle(order)
                for name in order:
                    _, url, _ = started[name]
                    what = f"{section} {connections:>5} connections {name}"
                    record: dict[str, Any] = {
                        "section": section,
                        "impl": name,
                        "connections": connections,
                        "rep": rep,
                    }
                    worker = Worker(
                        command(
                            "load",
                            section if broadcast else "echo",
                            url,
                            "--connections",
                            str(connections),
                            "--warmup",
                            str(max(settings.warmup, LOAD_WARMUP)),
                            "--duration",
                            str(settings.duration),
                        )
                    )
                    try:
                        answer = worker.receive(timeout=180)
                    except WorkerError as error:
                        record["error"] = str(error)[-1500:]
                        progress.note(f"error: {what}: {str(error)[-300:]}")
                        progress.step(what, "error")
                    else:
                        rate = answer["count"] / answer["seconds"]
                        key = "broadcasts_per_s" if broadcast else "msgs_per_s"
                        record[key] = rate
                        if broadcast:
                            record["deliveries_per_s"] = rate * connections
                        progress.step(what, f"{rate:,.0f}/s")
                    finally:
                        worker.close()
                    recorder.write(record)
    finally:
        for worker, _, _ in started.values():
            worker.close()


def memory_servers(settings: Settings) -> list[str]:
    """The servers of the memory cells: those asked for, and picows if it is installed."""
    wanted = {*settings.impls, "picows"}
    return [s for s in MEMORY_SERVERS if s in wanted and installed(s)]


def run_memory(settings: Settings, progress: Progress, recorder: Recorder) -> None:
    names = memory_servers(settings)
    for rep in range(settings.memory_reps):
        for compression in settings.memory_compression:
            for connections in settings.memory_connections:
                for name in names:
                    if compression and name in ("picows", "raw-tcp"):
                        continue  # neither has permessage-deflate
                    what = f"memory {connections:>5} idle{' deflate' if compression else ''} {name}"
                    record: dict[str, Any] = {
                        "section": "memory",
                        "impl": name,
                        "connections": connections,
                        "compression": compression,
                        "rep": rep,
                    }
                    try:
                        record.update(measure_memory(settings, name, connections, compression))
                    except WorkerError as error:
                        record["error"] = str(error)[-1500:]
                        progress.note(f"error: {what}: {str(error)[-300:]}")
                        progress.step(what, "error")
                    else:
                        progress.step(what, f"{record['bytes_per_connection'] / 1024:,.1f} KiB")
                    recorder.write(record)


def measure_memory(
    settings: Settings, name: str, connections: int, compression: bool
) -> dict[str, Any]:
    """The server's RSS growth per idle connection, each in a fresh server process."""
    server, url, pid = start_server(name, settings, compression=compression)
    try:
        warm = idle_clients(url, 16, compression)  # imports and first-use allocations
        warm.close()
        time.sleep(0.3)
        before = rss_bytes(pid)
        client = idle_clients(url, connections, compression)
        time.sleep(0.5)
        after = rss_bytes(pid)
        idle = None
        if compression:
            # wschannel frees the zlib state of a connection idle for COMPACT_INTERVAL (5 s),
            # checked every 5 s: measure everyone again once that has happened.
            time.sleep(IDLE_WAIT)
            idle = rss_bytes(pid)
        client.close()
    finally:
        server.close()
    record: dict[str, Any] = {
        "rss_before": before,
        "rss_after": after,
        "bytes_per_connection": (after - before) / connections,
    }
    if idle is not None:
        record["rss_idle"] = idle
        record["idle_wait"] = IDLE_WAIT
        record["bytes_per_connection_idle"] = (idle - before) / connections
    return record


IDLE_WAIT = 11.0
"""Seconds the compressed memory cells wait before measuring again (two compaction checks)."""


def idle_clients(url: str, connections: int, compression: bool) -> Worker:
    args = ["idle", url, "--connections", str(connections)]
    if compression:
        args.append("--compression")
    worker = Worker(command("load", *args))
    answer = worker.receive(timeout=180)
    if answer.get("ready") != connections:
        raise WorkerError(f"idle client: {answer}")
    return worker


# -- the plan -------------------------------------------------------------------------------


def count_measurements(settings: Settings) -> int:
    total = 0
    if "echo" in settings.sections:
        for variant in settings.variants:
            total += len(echo_cells(variant)) * len(variant_impls(settings, variant))
    if "compression" in settings.sections:
        total += 2 * len(compression_impls(settings))
    if "load" in settings.sections:
        total += len(settings.load_connections) * len(load_servers(settings, False))
    if "broadcast" in settings.sections:
        total += len(load_servers(settings, True))
    total *= settings.reps
    if "native" in settings.sections:
        total += native.count(settings)
    if "memory" in settings.sections:
        names = memory_servers(settings)
        compressing = [n for n in names if n not in ("picows", "raw-tcp")]
        per = len(names) * (False in settings.memory_compression)
        per += len(compressing) * (True in settings.memory_compression)
        total += per * len(settings.memory_connections) * settings.memory_reps
    return total


def make_certificates(directory: Path) -> None:
    """A CA and a certificate for 127.0.0.1, written as ``ca.pem`` and ``server.pem``."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "server.pem")
    )


SECTIONS = ("echo", "load", "broadcast", "memory", "compression", "native")
#: A quick run leaves out the native section (its first run builds Rust programs).
QUICK_SECTIONS = ("echo", "load", "broadcast", "memory", "compression")

#: What each implementation's client and server import, when it is not wschannel's own.
PACKAGES = {
    "wschannel-sync": "wschannel.sync",
    "picows": "picows",
    "picows-websockets": "picows.websockets",
    "websockets": "websockets",
    "websockets-sync": "websockets.sync.client",
    "aiohttp": "aiohttp",
    "websocket-client": "websocket",
}
#: What to install for each package the suite can use.
INSTALL = {
    "picows": "picows",
    "websockets": "websockets",
    "aiohttp": "aiohttp",
    "websocket": "websocket-client",
    "uvloop": "uvloop",
    "trustme": "trustme",
    "matplotlib": "matplotlib",
}


def module_found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def installed(impl: str) -> bool:
    """Whether an implementation's package imports (a server's name is its own impl's)."""
    module = PACKAGES.get(impl)
    return module is None or module_found(module)


def missing_for(impl: str) -> str | None:
    """What an implementation lacks: its own package, or that of the server it talks to."""
    for name in (impl, clients.CLIENTS[impl]):
        if not installed(name):
            return PACKAGES[name]
    return None


def install_hint(module: str) -> str:
    return INSTALL.get(module.split(".")[0], module.split(".")[0])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a run (``wschannel bench`` and ``python -m benchmarks`` share them)."""
    parser.add_argument("--quick", action="store_true", help="a short run (under two minutes)")
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default: ./wschannel-bench, or ./wschannel-bench-quick)",
    )
    parser.add_argument("--reps", type=int, help="repetitions (full: 5, quick: 1)")
    parser.add_argument("--duration", type=float, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, help="seconds before the window opens")
    parser.add_argument("--sections", help=f"comma-separated, of: {','.join(SECTIONS)}")
    parser.add_argument(
        "--variants", help=f"echo variants: {','.join(v.name for v in FULL_VARIANTS)}"
    )
    parser.add_argument("--sizes", help="echo payload sizes in bytes, e.g. 256,65536")
    parser.add_argument("--modes", help="messages in flight, e.g. 1,64")
    parser.add_argument(
        "--impls",
        help=f"comma-separated, of: {','.join(clients.CLIENTS)} (default: every one installed)",
    )
    parser.add_argument("--memory-connections", help="e.g. 1000,10000")
    parser.add_argument("--load-connections", help="e.g. 100,1000")
    parser.add_argument(
        "--broadcast-connections",
        help=f"clients of the broadcast cells (full: {BROADCAST_CONNECTIONS}, "
        f"quick: {QUICK_BROADCAST_CONNECTIONS})",
    )


def parse_args(
    argv: list[str] | None, *, prog: str = "wschannel bench", out: Path | None = None
) -> Settings:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_arguments(parser)
    return settings_from(parser.parse_args(argv), parser, out=out)


def settings_from(
    args: argparse.Namespace, parser: argparse.ArgumentParser, *, out: Path | None = None
) -> Settings:
    """The run's settings from the parsed options; ``out``: the default output directory
    (its name gets ``-quick`` with ``--quick``)."""
    quick = args.quick
    variants: tuple[Variant, ...] = QUICK_VARIANTS if quick else FULL_VARIANTS
    if args.variants:
        chosen = args.variants.split(",")
        unknown = set(chosen) - {v.name for v in FULL_VARIANTS}
        if unknown:
            parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
        variants = tuple(v for v in FULL_VARIANTS if v.name in chosen)
    if args.sizes or args.modes:
        sizes = _ints(args.sizes, parser, "--sizes") or None
        modes = _ints(args.modes, parser, "--modes") or None
        variants = tuple(
            Variant(
                v.name,
                sizes or v.sizes,
                modes or v.modes,
                tls=v.tls,
                loop=v.loop,
                pinned=v.pinned,
                text=v.text and not sizes,
            )
            for v in variants
        )
    if args.impls:
        impls = tuple(args.impls.split(","))
        unknown = set(impls) - set(clients.CLIENTS)
        if unknown:
            parser.error(f"unknown implementations: {', '.join(sorted(unknown))}")
        for impl in impls:
            missing = missing_for(impl)
            if missing:
                parser.error(f"{impl} needs {missing}: pip install {install_hint(missing)}")
    else:
        impls = tuple(clients.CLIENTS)  # those not installed are skipped, with a line each
    default_sections = QUICK_SECTIONS if quick else SECTIONS
    sections = tuple(args.sections.split(",")) if args.sections else default_sections
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if out is None:
        out = QUICK_OUT if quick else DEFAULT_OUT
    elif quick:
        out = out.with_name(out.name + "-quick")
    return Settings(
        out=args.out or out,
        reps=args.reps or (1 if quick else 5),
        warmup=args.warmup if args.warmup is not None else 0.1,
        duration=args.duration or (0.25 if quick else 0.4),
        variants=variants,
        impls=impls,
        sections=sections,
        load_connections=_ints(args.load_connections, parser, "--load-connections")
        or (QUICK_LOAD_CONNECTIONS if quick else LOAD_CONNECTIONS),
        broadcast_connections=_one_int(
            args.broadcast_connections, parser, "--broadcast-connections"
        )
        or (QUICK_BROADCAST_CONNECTIONS if quick else BROADCAST_CONNECTIONS),
        memory_connections=_ints(args.memory_connections, parser, "--memory-connections")
        or ((1000,) if quick else MEMORY_CONNECTIONS),
        memory_compression=(False,) if quick else (False, True),
        memory_reps=1,
        quick=quick,
    )


def _ints(text: str | None, parser: argparse.ArgumentParser, option: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        parser.error(f"{option} takes whole numbers separated by commas, not {text!r}")
    if any(value <= 0 for value in values):
        parser.error(f"{option} takes numbers above 0, not {text!r}")
    return values


def _one_int(text: str | None, parser: argparse.ArgumentParser, option: str) -> int:
    """One number above 0 (0: not given)."""
    values = _ints(text, parser, option)
    if len(values) > 1:
        parser.error(f"{option} takes one number, not {text!r}")
    return values[0] if values else 0


def without_missing(settings: Settings) -> tuple[Settings, list[str]]:
    """The settings less what cannot run here, and a line for each thing left out."""
    notes = []
    impls = []
    for impl in settings.impls:
        missing = missing_for(impl)
        if missing is None:
            impls.append(impl)
        else:
            hint = install_hint(missing)
            notes.append(f"skipping {impl}: {missing} is not installed (pip install {hint})")
    variants = []
    for variant in settings.variants:
        lacks = _variant_lacks(variant)
        if lacks is None:
            variants.append(variant)
        else:
            notes.append(f"skipping the {variant.name} variant: {lacks}")
    sections = list(settings.sections)
    many = [s for s in ("load", "broadcast") if s in sections]
    if many and not installed("picows"):
        notes.append(
            f"skipping {' and '.join(many)}: the load generator is picows's client "
            "(pip install picows)"
        )
        sections = [s for s in sections if s not in many]
    if not module_found("matplotlib"):
        notes.append("no plots: matplotlib is not installed (pip install 'wschannel[bench]')")
    kept = replace(settings, impls=tuple(impls), variants=tuple(variants), sections=tuple(sections))
    return kept, notes


def _variant_lacks(variant: Variant) -> str | None:
    if variant.tls and not module_found("trustme"):
        return "trustme is not installed, for its certificates (pip install 'wschannel[bench]')"
    if variant.loop == "uvloop" and not module_found("uvloop"):
        return "uvloop is not installed (pip install uvloop)"
    if variant.pinned and shutil.which("taskset") is None:
        return "taskset (util-linux) is not on PATH"
    return None


def main(
    argv: list[str] | None = None, *, prog: str = "wschannel bench", out: Path | None = None
) -> int:
    """Run the suite with the options in ``argv`` (``sys.argv[1:]`` if ``None``)."""
    return run(parse_args(argv, prog=prog, out=out), sys.argv[1:] if argv is None else argv)


def run(settings: Settings, argv: Iterable[str] = ()) -> int:
    """Run the suite as ``settings`` say, less what cannot run here (each said on stderr);
    returns the exit status."""
    settings, notes = without_missing(settings)
    for note in notes:
        print(note, file=sys.stderr)
    settings.out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(settings.out / "results.jsonl")
    progress = Progress(count_measurements(settings))
    meta = machine.describe()
    meta.update(
        section="meta",
        mode="quick" if settings.quick else "full",
        argv=list(argv),
        reps=settings.reps,
        warmup=settings.warmup,
        duration=settings.duration,
        impls=list(settings.impls),
        variants=[v.__dict__ for v in settings.variants],
        skipped=notes,
        load_before=os.getloadavg(),
    )
    recorder.write(meta)
    with tempfile.TemporaryDirectory(prefix="wschannel-bench-") as tls_dir:
        settings.tls_dir = tls_dir
        tls_echo = any(v.tls for v in settings.variants) and "echo" in settings.sections
        if (tls_echo or "native" in settings.sections) and module_found("trustme"):
            make_certificates(Path(tls_dir))
        started = time.monotonic()
        try:
            if "echo" in settings.sections:
                run_echo(settings, progress, recorder)
            if "compression" in settings.sections:
                run_compression(settings, progress, recorder)
            if "load" in settings.sections:
                run_many(settings, progress, recorder, broadcast=False)
            if "broadcast" in settings.sections:
                run_many(settings, progress, recorder, broadcast=True)
            if "memory" in settings.sections:
                run_memory(settings, progress, recorder)
            if "native" in settings.sections:
                folder, why = native.binaries()
                if folder is None:
                    progress.note(f"skipping the native section: {why}")
                else:
                    run_native(settings, progress, recorder, folder, start_server)
        finally:
            progress.finish()
            recorder.write(
                {
                    "section": "end",
                    "seconds": time.monotonic() - started,
                    "load_after": os.getloadavg(),
                }
            )
            recorder.close()
    written = report.write(settings.out, plots=module_found("matplotlib"))
    names = ", ".join(path.name for path in written)
    print(f"results in {settings.out}/: {names}", file=sys.stderr)
    return 0
