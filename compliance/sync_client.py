"""The Autobahn|Testsuite client, built on the blocking ``wschannel.sync.connect``.

Run by ``run.py`` (its client roles), which sets AUTOBAHN_URL and AUTOBAHN_AGENT: reads the
case count, echoes every message of every case (``for message in channel.stream``), then
asks for the report.
"""

from __future__ import annotations

import contextlib
import os

from echo_options import CLIENT_COMPRESSION, MAX_MESSAGE_SIZE

import wschannel.sync
from wschannel import WebSocketChannelException

# Autobahn's fuzzing server builds a case's frames before it answers the upgrade: 9.3.1's
# 65,536 fragments take it 0.7 s on a quiet machine and took over 10 s (the default connect
# timeout) in a CI run at load 20, where both clients dropped 9.3.1 and 9.4.1 waiting for the
# 101 ("failed by the wrong endpoint"; reproduced with connect_timeout=0.3).
CONNECT_TIMEOUT = 300.0


def echo_case(url: str) -> None:
    try:
        # No keepalive: Autobahn judges each case by the frames it receives, and a ping
        # during one of its longest cases (over 20 s) would be an unexpected frame.
        channel = wschannel.sync.connect(
            url,
            max_message_size=MAX_MESSAGE_SIZE,
            compression=CLIENT_COMPRESSION,
            ping_interval=None,
            connect_timeout=CONNECT_TIMEOUT,
        )
    except (WebSocketChannelException, TimeoutError):
        return  # the case's report says what went wrong
    for message in channel.stream:
        channel.sink.add(message)
    with contextlib.suppress(Exception):
        channel.wait_closed()


def main() -> None:
    url = os.environ["AUTOBAHN_URL"]
    agent = os.environ["AUTOBAHN_AGENT"]
    count = 0
    with wschannel.sync.connect(f"{url}/getCaseCount") as counter:
        for message in counter.stream:
            count = int(message)
    for case in range(1, count + 1):
        echo_case(f"{url}/runCase?case={case}&agent={agent}")
    with wschannel.sync.connect(f"{url}/updateReports?agent={agent}") as report:
        for _ in report.stream:
            pass


if __name__ == "__main__":
    main()
