"""What presence costs (docs/scaling.md, "Presence"): two nodes' brokers against a real
redis-server and nats-server, ``--members`` members of one topic split over them; the time
of each member's write (sequential) and of ``presence()`` (median and maximum of ``--reads``).

    python -m benchmarks.pubsub_presence [--members 1000] [--reads 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the brokers' processes

from pubsub.brokers import BrokerProcess, NatsServer, RedisServer, missing

from wschannel.pubsub import Broker, NatsBroker, RedisBroker


def _ignore(*args: object) -> None:
    pass


async def measure(server: BrokerProcess, members: int, reads: int) -> str:
    def make() -> Broker:
        return RedisBroker(server.url) if server.name == "redis" else NatsBroker(server.url)

    nodes = [make(), make()]
    for node in nodes:
        await node.start(_ignore, _ignore)
    try:
        started = time.perf_counter()
        for index in range(members):
            await nodes[index % 2].add_member("room", f"m{index}", f"user{index}")
        write = (time.perf_counter() - started) / members * 1e6
        times = []
        for _ in range(reads):
            started = time.perf_counter()
            found = await nodes[0].members("room", members)
            times.append((time.perf_counter() - started) * 1e3)
            assert len(found) == members, f"{len(found)} of {members} members listed"
    finally:
        for node in nodes:
            await node.close()
    return (
        f"{server.name}: a member's write {write:.0f} µs; presence() of {members} members "
        f"on 2 nodes: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=20)
    args = parser.parse_args()
    for kind, server_type in (("redis", RedisServer), ("nats", NatsServer)):
        if reason := missing(f"{kind}-server"):
            print(f"skipping {kind}: {reason}")
            continue
        with server_type() as server:
            print(await measure(server, args.members, args.reads), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
