"""The Autobahn|Testsuite client, built on ``IOWebSocketChannel.connect``.

Run by ``run.py`` (its client roles), which sets AUTOBAHN_URL and AUTOBAHN_AGENT: reads the
case count, echoes every message of every case, then asks for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from echo_options import CLIENT_COMPRESSION, MAX_MESSAGE_SIZE

from wschannel.io import IOWebSocketChannel

# Autobahn's fuzzing server builds a case's frames before it answers the upgrade: 9.3.1's
# 65,536 fragments take it 0.7 s on a quiet machine and took over 10 s (the default connect
# timeout) in a CI run at load 20, where both clients dropped 9.3.1 and 9.4.1 waiting for the
# 101 ("failed by the wrong endpoint"; reproduced with connect_timeout=0.3).
CONNECT_TIMEOUT = 300.0


async def echo_case(url: str) -> None:
    # No keepalive: Autobahn judges each case by the frames it receives, and a ping
    # during one of its longest cases (over 20 s) would be an unexpected frame.
    channel = IOWebSocketChannel.connect(
        url,
        max_message_size=MAX_MESSAGE_SIZE,
        compression=CLIENT_COMPRESSION,
        ping_interval=None,
        connect_timeout=CONNECT_TIMEOUT,
    )
    ended = asyncio.Event()
    # Listening before the connection opens: frames that come with the 101 response reach
    # the callback straight from the read, like every later one.
    channel.stream.listen(channel.sink.add, on_error=lambda _: None, on_done=ended.set)
    await ended.wait()
    with contextlib.suppress(Exception):
        await channel.sink.done


async def main() -> None:
    url = os.environ["AUTOBAHN_URL"]
    agent = os.environ["AUTOBAHN_AGENT"]
    counter = IOWebSocketChannel.connect(f"{url}/getCaseCount")
    count = 0
    async for message in counter.stream:
        count = int(message)
    for case in range(1, count + 1):
        await echo_case(f"{url}/runCase?case={case}&agent={agent}")
    report = IOWebSocketChannel.connect(f"{url}/updateReports?agent={agent}")
    async for _ in report.stream:
        pass
    await report.sink.close()


if __name__ == "__main__":
    asyncio.run(main())
