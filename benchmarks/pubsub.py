"""Fan-out across processes: one topic, 1,000 subscribers, side by side in one run —

- ``local``: one server process, the message sent with ``wschannel.broadcast`` to its
  subscribers (no broker: the ceiling of one process);
- ``redis``: two worker processes on one port (``wschannel.workers``, ``SO_REUSEPORT``), the
  message through Redis pub/sub (``wschannel.pubsub.Topics`` + ``RedisBroker``) to both;
- ``nats``: the same through NATS (``NatsBroker``).

The load is native (``pubsub_load.c``, built here with ``cc``), so that the clients are not
what caps the figure: it opens the subscribers (spread by the kernel over the workers; each
is told which worker has it) and one publisher connection, which sends timestamped
messages; the server publishes each to the topic. Two measurements per setup:

- **saturation**: ``--window`` messages in flight (the next is sent when one has reached all
  subscribers): deliveries per second. The load generator reads in rounds ``--pause`` ms
  apart, so that a read brings several frames: it shares the machine's CPUs with the servers,
  and reading each frame as it came it used about 0.8 of a worker's CPU per delivery;
- **latency**: ``--rate`` messages per second on schedule (the same load for every setup):
  p50 and p99 of publish-to-delivery time, from the publisher's send to the moment the frame
  reached the subscriber's socket (the kernel's receive timestamp; one clock), and to the
  moment the load generator read it, which waits ``--read-delay`` ms so as not to take a CPU
  from the servers while they deliver.

For each, the CPU time every process used in exactly the measured seconds (the load
generator reads the servers', the broker's and its own CPU clocks at the window's edges), per
1,000 deliveries and as a share of a core, and what the rest of the machine took meanwhile
(other processes; "stolen": the hypervisor's steal time of this virtual machine, which the
load average does not show). ``--repeat N`` runs it all N times and prints each setup's
spread.

    python -m benchmarks.pubsub                        # about 75 s a run
    python -m benchmarks.pubsub --repeat 3             # the figures of docs/scaling.md
    python -m benchmarks.pubsub --subscribers 200 --duration 3 --setups local,redis
    make bench-pubsub

Needs redis-server and nats-server (tests/pubsub/setup.sh) and a C compiler. Prints a table
and writes ``--out`` (default ``benchmarks/results/pubsub.json``) with the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/pubsub/brokers.py starts the brokers

from pubsub.brokers import BrokerProcess, NatsServer, RedisServer, missing  # noqa: E402

import wschannel  # noqa: E402
from wschannel.channel import WebSocketChannel  # noqa: E402
from wschannel.io import IOWebSocketChannel  # noqa: E402
from wschannel.pubsub import NatsBroker, RedisBroker, Topics  # noqa: E402
from wschannel.server import Handler  # noqa: E402
from wschannel.workers import Workers  # noqa: E402

_SETUP = "WSCHANNEL_BENCH_PUBSUB"
TOPIC = "bench"


@contextlib.asynccontextmanager
async def app() -> AsyncIterator[Handler]:
    """A worker: "join" joins the topic (answered "joined"); any other message is published
    to it (``local``: broadcast to this process's subscribers)."""
    setup = json.loads(os.environ[_SETUP])
    joined, me = f"joined {os.getpid()}", f"pid {os.getpid()}"  # which process has it
    if setup["broker"] is None:
        members: list[WebSocketChannel] = []

        async def local(channel: IOWebSocketChannel) -> None:
            async for message in channel.stream:
                if message == "join":
                    members.append(channel)
                    channel.sink.add(joined)
                elif message == "who":
                    channel.sink.add(me)
                else:
                    wschannel.broadcast(members, message)

        yield local
        return
    url = setup["broker"]
    broker = NatsBroker(url) if url.startswith("nats") else RedisBroker(url)
    async with Topics(broker, slow="drop") as topics:
        publishing: set[asyncio.Task[Any]] = set()

        async def handler(channel: IOWebSocketChannel) -> None:
            async for message in channel.stream:
                if message == "join":
                    await topics.join(channel, TOPIC)
                    channel.sink.add(joined)
                elif message == "who":
                    channel.sink.add(me)
                else:  # not awaited here: the next message is read meanwhile
                    task = asyncio.ensure_future(topics.publish(TOPIC, message))
                    publishing.add(task)
                    task.add_done_callback(published)

        def published(task: asyncio.Task[Any]) -> None:
            publishing.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failures[0] += 1  # the broker was unreachable: the load generator counts it

        failures = [0]

        yield handler


def build_load() -> Path:
    """Compile pubsub_load.c (into a temporary directory)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("benchmarks/pubsub.py needs a C compiler (cc) for its load generator")
    out = Path(tempfile.mkdtemp(prefix="wschannel-pubsub-load-")) / "pubsub_load"
    subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(out), str(HERE / "pubsub_load.c")], check=True
    )
    return out


def load(
    binary: Path, port: int, args: argparse.Namespace, mode: str, value: float, pids: list[int]
) -> Any:
    command = [
        str(binary),
        str(port),
        str(args.subscribers),
        mode,
        str(value),
        str(args.warmup),
        str(args.duration),
        str(args.size),
        str(args.pause if mode == "window" else args.read_delay),
        *(str(pid) for pid in pids),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


@contextlib.contextmanager
def servers(broker_url: str | None, workers: int) -> Iterator[Workers]:
    os.environ[_SETUP] = json.dumps({"broker": broker_url})
    with Workers(app, "127.0.0.1", 0, workers=workers, max_queue=None) as running:
        yield running


def measured(
    binary: Path,
    running: Workers,
    broker_pid: int | None,
    args: argparse.Namespace,
    mode: str,
    value: float,
) -> Any:
    """A load run, with the CPU time each process used in the measured window (the load
    generator reads the servers', the broker's and its own CPU clocks at the window's
    edges): per 1,000 deliveries, and as a share of a core."""
    workers = [p.pid for p in running.processes if p.pid is not None]
    pids = workers + ([broker_pid] if broker_pid else [])
    result = load(binary, running.port, args, mode, value, pids)
    seconds = max(result["seconds"], 1e-9)
    thousands = max(result["deliveries"], 1) / 1000
    cpu = {int(pid): used for pid, used in result.pop("cpu_s").items()}
    server = sum(cpu[pid] for pid in workers)
    broker = cpu.get(broker_pid, 0.0) if broker_pid else 0.0
    result["server_cpu_ms_per_1000"] = round(server * 1000 / thousands, 2)
    result["broker_cpu_ms_per_1000"] = round(broker * 1000 / thousands, 2)
    result["loadgen_cpu_ms_per_1000"] = round(result["loadgen_cpu_s"] * 1000 / thousands, 2)
    result["frames_per_read"] = round(result["deliveries"] / max(result["reads"], 1), 2)
    split = {int(pid): count for pid, count in result.pop("subscribers_by_pid").items()}
    # each process's share of a core in the window, and its subscribers ("P": the publisher's)
    result["processes"] = [
        {
            "role": f"worker {index}" + (" (publisher)" if pid == result["publisher_pid"] else ""),
            "subscribers": split.get(pid, 0),
            "cpu_share": round(cpu[pid] / seconds, 3),
        }
        for index, pid in enumerate(workers)
    ]
    if broker_pid:
        result["processes"].append({"role": "broker", "cpu_share": round(broker / seconds, 3)})
    result["processes"].append(
        {"role": "load generator", "cpu_share": round(result["loadgen_cpu_s"] / seconds, 3)}
    )
    ours = server + broker + result["loadgen_cpu_s"]
    # the rest of the machine in the same window: other processes (and the kernel's work not
    # charged to a process), and what the hypervisor took from this virtual machine's CPUs
    result["other_cpu_share"] = round(max(result["machine_busy_cpu_s"] - ours, 0.0) / seconds, 3)
    result["steal_share"] = round(result["machine_steal_cpu_s"] / seconds, 3)
    return result


def shares(result: dict[str, Any]) -> str:
    return ", ".join(
        f"{p['role']}"
        + (f" [{p['subscribers']}]" if "subscribers" in p else "")
        + f" {p['cpu_share']:.2f}"
        for p in result["processes"]
    ) + (
        f"; other work {result['other_cpu_share']:.2f}, stolen {result['steal_share']:.2f}; "
        f"{result['frames_per_read']:.1f} frames per read"
    )


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    binary = build_load()
    results = []
    with contextlib.ExitStack() as stack:
        brokers: dict[str, BrokerProcess] = {}
        for name in args.setups:
            if name == "local":
                continue
            if reason := missing(f"{name}-server"):
                raise SystemExit(reason)
            server: BrokerProcess = RedisServer() if name == "redis" else NatsServer()
            brokers[name] = stack.enter_context(server)
        for name in args.setups:
            url = None if name == "local" else brokers[name].url
            workers = 1 if name == "local" else args.workers
            print(f"{name}: {workers} process(es), {args.subscribers} subscribers", flush=True)
            broker = brokers.get(name)
            broker_pid = broker.process.pid if broker and broker.process else None
            with servers(url, workers) as running:
                saturation = measured(binary, running, broker_pid, args, "window", args.window)
                paced = measured(binary, running, broker_pid, args, "rate", args.rate)
            results.append(
                {
                    "setup": name,
                    "processes": workers,
                    "saturation": saturation,
                    "paced": paced,
                    "loadavg_after": loadavg(),
                }
            )
            print(f"  {row(results[-1])}", flush=True)
            print(f"  CPU share at saturation: {shares(saturation)}", flush=True)
            print(f"  CPU share paced: {shares(paced)}", flush=True)
    return results


def row(result: dict[str, Any]) -> str:
    saturation, paced = result["saturation"], result["paced"]
    return (
        f"| {result['setup']} | {result['processes']} "
        f"| {saturation['deliveries_per_s']:,.0f} "
        f"| {paced['deliveries_per_s']:,.0f} | {paced['p50_us'] / 1000:.2f} "
        f"| {paced['p99_us'] / 1000:.2f} | {paced['deliveries']:,} / {paced['expected']:,} "
        f"| {saturation['server_cpu_ms_per_1000']:.1f} "
        f"| {saturation['broker_cpu_ms_per_1000']:.1f} "
        f"| {saturation['loadgen_cpu_ms_per_1000']:.1f} "
        f"| {saturation['other_cpu_share']:.2f} / {saturation['steal_share']:.2f} |"
    )


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.subscribers} subscribers, {args.size}-byte messages; saturation: "
        f"{args.window} in flight; paced: {args.rate:g} messages/s "
        f"({args.rate * args.subscribers:,.0f} deliveries/s asked)",
        "",
        "| setup | processes | deliveries/s at saturation | deliveries/s paced | p50 ms | "
        "p99 ms | paced deliveries / expected | server CPU ms / 1,000 deliveries | broker CPU "
        "ms / 1,000 | load generator CPU ms / 1,000 | other work / stolen (CPUs) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [row(result) for result in results]
    base = next((r for r in results if r["setup"] == "local"), None)
    if base is not None:
        lines.append("")
        for result in results:
            if result is base:
                continue
            ratio = (
                result["saturation"]["deliveries_per_s"] / base["saturation"]["deliveries_per_s"]
            )
            added = (result["paced"]["p99_us"] - base["paced"]["p99_us"]) / 1000
            lines.append(
                f"{result['setup']}: {ratio:.2f}x the deliveries of one process; "
                f"p99 {added:+.2f} ms against local"
            )
    return "\n".join(lines)


def summary(runs: list[list[dict[str, Any]]]) -> str:
    """Several runs side by side: each setup's saturation rate, ratio to ``local`` and p99
    in every run, and how far the runs are from their mean."""

    def spread(values: list[float]) -> str:
        mean = sum(values) / len(values)
        return f"±{max(abs(v - mean) for v in values) / mean * 100:.0f} %" if mean else "-"

    lines = [
        f"{len(runs)} runs: deliveries/s at saturation (x local) / p99 ms paced",
        "",
        "| setup | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | spread |",
        "|---|" + "---:|" * (len(runs) + 1),
    ]
    for index, first in enumerate(runs[0]):
        cells, rates = [], []
        for results in runs:
            result = results[index]
            base = next((r for r in results if r["setup"] == "local"), None)
            rate = result["saturation"]["deliveries_per_s"]
            rates.append(rate)
            ratio = (
                f" ({rate / base['saturation']['deliveries_per_s']:.2f}x)"
                if base is not None and base is not result
                else ""
            )
            cells.append(f"{rate:,.0f}{ratio} / {result['paced']['p99_us'] / 1000:.2f}")
        lines.append(f"| {first['setup']} | " + " | ".join(cells) + f" | {spread(rates)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--setups", default="local,redis,nats")
    parser.add_argument("--window", type=int, default=64, help="messages in flight at saturation")
    parser.add_argument("--rate", type=float, default=20.0, help="messages/s for the latency")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes")
    parser.add_argument(
        "--pause",
        type=float,
        default=50.0,
        help="saturation: ms the load generator waits, once something arrived, before it "
        "reads (so that a read brings several frames)",
    )
    parser.add_argument(
        "--read-delay",
        type=float,
        default=20.0,
        help="paced: ms the load generator waits, once something arrived, before it reads "
        "(the servers deliver meanwhile without it; the latency is the kernel's receive time)",
    )
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs, one after the other")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pubsub.json")
    args = parser.parse_args()
    args.setups = [name.strip() for name in args.setups.split(",") if name.strip()]
    for name in args.setups:
        if name not in ("local", "redis", "nats"):
            parser.error(f"unknown setup {name!r}: local, redis, nats")
    if args.repeat < 1:
        parser.error("--repeat is at least 1")
    started = time.time()
    runs: list[dict[str, Any]] = []
    for number in range(args.repeat):
        before = loadavg()
        results = run(args)
        text = table(results, args)
        print()
        print(text)
        after = loadavg()
        print(f"\nload average before: {before}, after: {after} ({os.cpu_count()} CPUs)")
        runs.append(
            {
                "run": number + 1,
                "loadavg_before": before,
                "loadavg_after": after,
                "results": results,
            }
        )
    record: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model()},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": runs,
    }
    if args.repeat > 1:
        record["summary"] = summary([r["results"] for r in runs])
        print()
        print(record["summary"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
