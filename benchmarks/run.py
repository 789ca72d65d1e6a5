"""Run the benchmark suite: ``python -m benchmarks [--quick] [--out DIR] ...``.

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

Measurements are interleaved: each repetition runs every cell once, with the
implementations in a new order, so a slow moment of a shared machine lands on all of
them. Results go to ``DIR/results.jsonl`` (one JSON object a line), then ``DIR/table.md``
and ``DIR/*.png`` are made from it (``python -m benchmarks.report DIR`` remakes them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import clients, machine, report, servers
from .payloads import SIZES, TEXT_SIZE, size_label
from .processes import Worker, WorkerError, command, rss_bytes

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
QUICK_OUT = Path(__file__).resolve().parent / "results-quick"
PIPELINE = 64
LOAD_CONNECTIONS = (100, 1000)
BROADCAST_CONNECTIONS = 1000
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
QUICK_VARIANTS = (
    Variant("plain", (256, 64 << 10), (1, PIPELINE)),
    Variant("tls", (256,), (1, PIPELINE), tls=True),
    Variant("pinned", (256,), (1,), pinned=True),
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
    memory_connections: tuple[int, ...]
    memory_reps: int
    quick: bool
    tls_dir: str = ""
    measurements: int = 0
    started: float = field(default_factory=time.time)


class Progress:
    """One status line on stderr: where the run is, the last result, the time left."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.started = time.monotonic()
        self.tty = stream.isatty()

    def step(self, what: str, result: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * max(self.total - self.done, 0)
        line = (
            f"[{self.done:4}/{self.total} {100 * self.done // self.total:3}%] {what:<52} "
            f"{result:>16}  elapsed {_clock(elapsed)}  left ~{_clock(left)}"
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
    """Appends result lines to ``results.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w")

    def write(self, record: dict[str, Any]) -> None:
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
    return [s for s in servers.SERVERS if s in set(settings.impls) | {"picows"} and s != "raw-tcp"]


def run_many(
    settings: Settings, progress: Progress, recorder: Recorder, *, broadcast: bool
) -> None:
    """The ``load`` section (echo on 100 and 1,000 connections) or ``broadcast``."""
    names = load_servers(settings, broadcast)
    section = "broadcast" if broadcast else "load"
    counts = (BROADCAST_CONNECTIONS,) if broadcast else settings.load_connections
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


def run_memory(settings: Settings, progress: Progress, recorder: Recorder) -> None:
    names = [s for s in MEMORY_SERVERS if s in set(settings.impls) | {"picows"}]
    for rep in range(settings.memory_reps):
        for compression in (False, True):
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
    if "memory" in settings.sections:
        names = [s for s in MEMORY_SERVERS if s in set(settings.impls) | {"picows"}]
        per = len(names) + len([n for n in names if n not in ("picows", "raw-tcp")])
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


SECTIONS = ("echo", "load", "broadcast", "memory", "compression")


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short run (under two minutes)")
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default: benchmarks/results, or results-quick with --quick)",
    )
    parser.add_argument("--reps", type=int, help="repetitions (full: 5, quick: 1)")
    parser.add_argument("--duration", type=float, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, help="seconds before the window opens")
    parser.add_argument("--sections", help=f"comma-separated, of: {','.join(SECTIONS)}")
    parser.add_argument("--variants", help="echo variants: plain,tls,uvloop,pinned")
    parser.add_argument("--sizes", help="echo payload sizes in bytes, e.g. 256,65536")
    parser.add_argument("--modes", help="messages in flight, e.g. 1,64")
    parser.add_argument(
        "--impls", help=f"comma-separated, of: {','.join(clients.CLIENTS)} (default: all)"
    )
    parser.add_argument("--memory-connections", help="e.g. 1000,10000")
    parser.add_argument("--load-connections", help="e.g. 100,1000")
    args = parser.parse_args(argv)

    quick = args.quick
    variants: tuple[Variant, ...] = QUICK_VARIANTS if quick else FULL_VARIANTS
    if args.variants:
        chosen = args.variants.split(",")
        variants = tuple(v for v in FULL_VARIANTS if v.name in chosen)
    if args.sizes or args.modes:
        sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
        modes = tuple(int(m) for m in args.modes.split(",")) if args.modes else None
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
    impls = tuple(args.impls.split(",")) if args.impls else tuple(available_impls())
    unknown = set(impls) - set(clients.CLIENTS)
    if unknown:
        parser.error(f"unknown implementations: {', '.join(sorted(unknown))}")
    settings = Settings(
        out=args.out or (QUICK_OUT if quick else DEFAULT_OUT),
        reps=args.reps or (1 if quick else 5),
        warmup=args.warmup if args.warmup is not None else 0.1,
        duration=args.duration or (0.25 if quick else 0.4),
        variants=variants,
        impls=impls,
        sections=tuple(args.sections.split(",")) if args.sections else SECTIONS,
        load_connections=_ints(args.load_connections) or LOAD_CONNECTIONS,
        memory_connections=_ints(args.memory_connections)
        or ((1000,) if quick else MEMORY_CONNECTIONS),
        memory_reps=1,
        quick=quick,
    )
    return settings


def _ints(text: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",")) if text else ()


def available_impls() -> Iterator[str]:
    """Every implementation whose package imports (``wschannel.sync`` may not exist yet)."""
    import importlib.util

    needs = {
        "wschannel-sync": "wschannel.sync",
        "picows": "picows",
        "picows-websockets": "picows.websockets",
        "websockets": "websockets",
        "websockets-sync": "websockets.sync.client",
        "aiohttp": "aiohttp",
        "websocket-client": "websocket",
    }
    for impl in clients.CLIENTS:
        module = needs.get(impl)
        try:
            found = module is None or importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            yield impl


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    settings.out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(settings.out / "results.jsonl")
    progress = Progress(count_measurements(settings))
    meta = machine.describe()
    meta.update(
        section="meta",
        mode="quick" if settings.quick else "full",
        argv=sys.argv[1:] if argv is None else argv,
        reps=settings.reps,
        warmup=settings.warmup,
        duration=settings.duration,
        impls=list(settings.impls),
        variants=[v.__dict__ for v in settings.variants],
        load_before=os.getloadavg(),
    )
    recorder.write(meta)
    with tempfile.TemporaryDirectory(prefix="wschannel-bench-") as tls_dir:
        settings.tls_dir = tls_dir
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
    report.write(settings.out)
    print(f"results in {settings.out}/ (table.md, results.jsonl, *.png)", file=sys.stderr)
    return 0
